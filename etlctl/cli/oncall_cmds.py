"""On-call tooling: doctor, why, history, watch and metrics. All read-only
(:mod:`etlctl.oncall`), each shown by its module of :mod:`etlctl.views`."""

from __future__ import annotations

import click

from etlctl.cli.options import (
    broker_options,
    broker_settings,
    command_name,
    connection_options,
    decided,
    example,
    job_argument,
    jobs_argument,
    limit_option,
    optional_job_argument,
    output_options,
    session,
    settings,
    tenant_option,
    timing_options,
    timings_from,
)
from etlctl.core.job import parse_ref


@click.command()
@tenant_option("jobs and queue messages")
@timing_options
@broker_options
@connection_options
@output_options
@example("""
etlctl doctor
etlctl doctor --tenant acme
etlctl doctor --json | jq -r '.findings[] | select(.severity == "problem") | .fix[].command'
""")
def doctor(tenant, delay, backoff, cooldown, as_json) -> int:
    """Check the whole database for the flow document's common issues and
    say, for each, its cause and the exact command that fixes it.

    \b
    - Timer keeps retrying: a FINISHED job whose check fails (which step and
      phase, since when)
    - Stuck on FINISHED: longer than delay + backoff + cool-down with no reset
      pending, or the reset gave up
    - Next job not starting: due but not started, blocked, or next_run too far
    - Multiple jobs running on one integration
    Also: schema not initialised or migrations pending, the partial index
    missing, clock skew over 5s between this host and the database, malformed
    status documents, queue messages pending for over 15 minutes (never
    published or claimed, with the relay's last error when it tried), and
    RUNNING jobs far longer than their own history (3x their median run, at
    least 30 minutes; 24 hours when they have none), and an `etlctl run` not
    seen for more than twice its --max-sleep. With a message broker
    configured: the broker unreachable or refusing etlctl, a queue the outbox
    targets missing, and a queue that no worker consumes.

    Exit 0 when it found no problem (notes, such as an inactive tenant, do not
    count), 3 when it found problems, 6 when the database cannot be reached.
    --delay/--backoff/--cooldown must match what sweep uses. With --tenant,
    the findings about that tenant's jobs and messages, and those about the
    database as a whole (schema, index, clock skew).
    """
    from etlctl.errors import NOT_FINISHED, OK
    from etlctl.oncall import doctor as checks
    from etlctl.views import doctor as views

    timings = timings_from(delay, backoff, cooldown)
    with session() as s:
        report = checks.run(s, timings, tenant=tenant, broker=broker_settings())
    code = decided(OK if report.healthy else NOT_FINISHED)
    views.show(report, as_json)
    return code


@click.command()
@job_argument
@timing_options
@connection_options
@output_options
@example("""
etlctl why 7
etlctl why Jira --tenant acme --json
""")
def why(job, tenant, delay, backoff, cooldown, as_json) -> None:
    """Explain one job in plain words: its state, what it waits for, and what
    happens next and when.

    \b
    For example:
      reset pending: attempt 2 of 5, next check at 10:42:10 (in 1m10s)
      READY; next_run in 4h12m
      blocked: integration 7 busy with job 12 (RUNNING for 3h)
      gave up at 10:51: jira_dev_status.embedding still running

    It reads only. The times are the database's, in --db-timezone.
    """
    from etlctl.oncall import why as explaining
    from etlctl.views import why as views

    timings = timings_from(delay, backoff, cooldown)
    ref = parse_ref(job, tenant)
    with session() as s:
        explanation = explaining.explain_job(s, ref, timings)
    views.show(explanation, as_json)


@click.command()
@optional_job_argument
@click.option("--since", metavar="T", help="Only changes since T: an ISO time (naive: in --db-timezone) or a duration "
                                           "ago such as 30m or 2h (at most 3650d).")
@limit_option(50, "changes shown, the newest; a note says when there are more")
@connection_options
@output_options
@example("""
etlctl history 7
etlctl history 7 --since 2h --json
etlctl history --tenant acme --since 30m
""")
def history(job, tenant, since, limit, as_json) -> None:
    """Show a job's audited state changes, oldest first: time, from → to,
    run token (its first 8 characters, which --token accepts), command,
    host:pid and database user, and what changed. Without JOB, every job's
    (or one tenant's), with the job's id first.

    Every change etlctl makes is audited in the same statement. Workers that
    write the table directly leave no rows here. The history of a deleted job
    stays readable by its id.
    """
    from etlctl.oncall import history as audit
    from etlctl.views import history as views

    audit.parse_since(since)  # a bad --since is a usage error before connecting
    ref = parse_ref(job, tenant) if job is not None else None
    with session() as s:
        found = audit.read(s, ref, since, limit, tenant=tenant)
    views.show(found, as_json, since)


@click.command()
@jobs_argument
@tenant_option("jobs", "Only this tenant's jobs (id or name); with JOBs, picks among same-named jobs. "
                       "An unknown tenant exits 5.")
@connection_options
@output_options
@example("""
etlctl watch
etlctl watch --tenant acme
etlctl watch 7 12 --json
""")
def watch(jobs, tenant, as_json) -> None:
    """Print job status changes as they happen: the command-line form of the
    UI's WebSocket messages.

    It LISTENs on etl_job_status and, for each change of a watched job (every
    job when none is given, or every job of --tenant), prints a table row, or with --json one object per
    line: {"job_id": 7, "overall": ..., "steps": {...}, "resync": false}. With
    JOBs it first prints their current state.

    When the connection drops it reconnects (with backoff), re-reads the
    watched jobs and prints what changed meanwhile ("resync": true), since
    NOTIFY is not replayed. Ctrl-C stops it (exit 130).
    """
    from etlctl.oncall import watch as watching
    from etlctl.views import render
    from etlctl.views import watch as views

    refs = [parse_ref(j, tenant) for j in jobs]
    watching.watch(settings(), command_name(), refs, views.Printer(as_json), render.note, tenant=tenant)


@click.command()
@click.option("--textfile", metavar="PATH",
              help="Write to PATH atomically (temp file + rename) for node_exporter's textfile collector; print nothing.")
@tenant_option("jobs and queue messages")
@connection_options
@example("""
etlctl metrics
etlctl metrics --tenant acme
etlctl metrics --textfile /var/lib/node_exporter/textfile_collector/etlctl.prom
""")
def metrics(textfile, tenant) -> None:
    """Print Prometheus metrics (text format): jobs by overall state, tenant
    and kind; seconds since each job's last successful finish; pending resets;
    resets that gave up; queue depth (messages pending or claimed) and the
    oldest one's age; messages published, skipped and nacked (counters); the
    age of the oldest FINISHED job.

    Every metric is named etlctl_*; all are gauges but the three *_total
    counters. Run it from cron with --textfile
    (see RUNBOOK.md); exit 6 when the database cannot be reached, and the file
    then keeps its last content (alert on node_textfile_mtime_seconds).
    """
    from etlctl.oncall import metrics as prometheus
    from etlctl.views import metrics as views

    with session() as s:
        # Inside the session: the per-job family streams from a server-side cursor while it is written.
        views.show(prometheus.read(s, tenant), textfile)
