"""Scheduling: schedule-next, the queue (:mod:`etlctl.actions.schedule`) and cron
(:mod:`etlctl.actions.cron`), shown by :mod:`etlctl.views.schedule`."""

from __future__ import annotations

import click

from etlctl.cli.options import (
    broker_options,
    broker_settings,
    connection_options,
    dry_run_option,
    example,
    limit_option,
    output_options,
    session,
    settings,
    tenant_option,
)
from etlctl.core.rules import PHASES


@click.command("schedule-next")
@dry_run_option
@click.option("--explain", is_flag=True, help="Also say, for every job not started, why not.")
@tenant_option("jobs")
@limit_option(1000, "jobs started in this tick")
@click.option("--chain-grace", metavar="DURATION", default="60s", show_default=True,
              help="Queue a RUNNING job's next step only when nothing touched the job for this long (at most 1d).")
@broker_options
@connection_options
@output_options
@example("""
etlctl schedule-next
etlctl schedule-next --dry-run --explain
""")
def schedule_next(dry_run, explain, tenant, limit, chain_grace, as_json) -> None:
    """Start the due job of each idle integration: one non-blocking tick,
    safe to run from cron every minute on several hosts at once.

    A job is due when it, its integration and its tenant are active and it is
    READY with next_run passed (or NULL), FAILED for longer than its
    retry_interval_minutes (retry_count goes up), or RATE_LIMIT_REACHED with
    next_run passed. An integration with a job RUNNING or FINISHED (not yet
    reset) is busy. Per idle integration the earliest due job starts: RUNNING,
    a new run token, every phase idle, and its first extraction queued (the
    message the existing run-now path publishes), in one transaction. A job
    without an integration is scheduled on its own; a job whose kind defines
    no message is never started.

    It also queues the next step's extraction of RUNNING jobs whose steps so
    far are finished and whose next step is still idle, for steps marked to
    chain (none of the seeded kinds: their workers chain themselves; see
    --chain-grace).
    Quiet when it started nothing; a second tick running at the same time
    exits 0 at once.

    With a message broker configured (--amqp-url, ETLCTL_AMQP_URL or the
    RABBITMQ_* variables) it publishes the messages it queued right after
    its commit, as `etlctl relay` does. When the broker cannot be reached the
    started runs stand: their messages wait in the outbox for `etlctl relay`,
    and schedule-next says so and exits 8 (3 when the broker refused some).
    """
    from etlctl.actions import schedule as scheduler
    from etlctl.core.humanize import MAX_CHAIN_GRACE, parse_duration
    from etlctl.views import schedule as views

    grace = parse_duration(chain_grace, "--chain-grace", MAX_CHAIN_GRACE)
    broker = broker_settings()
    with session(dry_run) as s:
        tick = scheduler.tick(s, tenant=tenant, limit=limit, chain_grace=grace, explain=explain, broker=broker)
    views.show_tick(tick, as_json, dry_run, explain)
    _publishing_outcome(tick)


def _publishing_outcome(tick) -> None:
    """The error schedule-next ends with when its messages did not all reach the broker."""
    from etlctl.errors import NotConfirmed
    from etlctl.views import relay as relay_views

    if tick.publish_error is not None:
        raise tick.publish_error
    if tick.published is not None and tick.published.not_confirmed:
        count, reasons = relay_views.not_confirmed_summary(tick.published.not_confirmed)
        raise NotConfirmed(count=count, reasons=reasons)


@click.group()
@example("""
etlctl queue ls --pending
etlctl queue claim --worker shell-1 --json
etlctl queue done 12
""")
def queue() -> None:
    """List, claim and finish queued extraction messages (etlctl.queue):
    the transactional outbox that schedule-next fills, in the shape a relay
    to the message broker reads it.
    """

@queue.command("ls")
@click.option("--pending", is_flag=True, help="Only messages still waiting: pending, or claimed and not done.")
@limit_option(100, "messages shown, the newest; a note says when there are more")
@connection_options
@output_options
@example("""
etlctl queue ls --pending
""")
def queue_ls(pending, limit, as_json) -> None:
    """List queued messages, oldest first (the newest --limit of them), each
    with its state: pending (with its failed attempts and the last error),
    published (the broker confirmed it), skipped (its run was over when the
    relay looked), claimed by a worker, or done; and the queue it goes to.
    """
    from etlctl.actions import schedule as scheduler
    from etlctl.views import schedule as views

    with session() as s:
        rows, more = scheduler.queue_list(s, pending=pending, limit=limit)
    views.show_queue(rows, as_json, pending, more)

@queue.command("claim")
@click.option("--phase", type=click.Choice(PHASES), default="extraction", show_default=True,
              help="Claim a message of this phase (schedule-next queues extraction messages).")
@click.option("--worker", required=True, metavar="NAME", help="Who claims it (recorded as claimed_by).")
@connection_options
@output_options
@dry_run_option
@example("""
etlctl queue claim --worker shell-1 --json
""")
def queue_claim(phase, worker, as_json, dry_run) -> int:
    """Take the oldest pending message of a phase and print it: for workers
    that read the outbox instead of RabbitMQ.

    Concurrent claimers never get the same message (FOR UPDATE SKIP LOCKED).
    A claimed message is never published by `etlctl relay`, and one the relay
    published or skipped is never claimed. Exits 3 when there is nothing to
    claim.
    """
    from etlctl.actions import schedule as scheduler
    from etlctl.errors import NOT_FINISHED, OK
    from etlctl.views import schedule as views

    with session(dry_run) as s:
        row = scheduler.claim(s, phase=phase, worker=worker)
    views.show_claim(row, phase, as_json, dry_run)
    return OK if row is not None else NOT_FINISHED

@queue.command("done")
@click.argument("message_id", metavar="ID", type=int)
@connection_options
@output_options
@dry_run_option
@example("""
etlctl queue done 12
""")
def queue_done(message_id, as_json, dry_run) -> None:
    """Mark a message done. Doing it twice is not an error; an unknown ID exits 5."""
    from etlctl.actions import schedule as scheduler
    from etlctl.views import schedule as views

    with session(dry_run) as s:
        outcome = scheduler.done(s, message_id)
    views.show_done(message_id, outcome, as_json, dry_run)

@click.command()
@click.option("--every", default="1m", show_default=True, metavar="INTERVAL",
              help="How often: an interval that divides the hour (1m..30m) or the day (1h..12h).")
@click.option("--install", is_flag=True, help="Write the block into your crontab, replacing an earlier etlctl block.")
@click.option("--log", "log_path", metavar="FILE", help="Where the ticks' output goes [default: ETLCTL_HOME/cron.log].")
@connection_options
@broker_options
@example("""
etlctl cron
etlctl --dsn postgresql://etl@db.internal/etl cron --every 5m --install
""")
def cron(every, install, log_path) -> None:
    """Print (or install) the crontab block that runs schedule-next and sweep.

    Each of its lines carries its own environment (a NAME=value line would
    apply to every crontab line below it): the database as this command
    found it (--dsn, ETLCTL_DSN, the PG* variables or ETLCTL_HOME; never a
    password: keep that in ~/.pgpass), the settings that differ from the
    defaults, the broker as this command found it (--amqp-url, ETLCTL_AMQP_URL
    or the RABBITMQ_* variables; never its password: name a 0600 file in
    ETLCTL_AMQP_PASSWORD_FILE), and ETLCTL_LOG_TIMESTAMPS=1, so every line of
    the log says when.
    Paths and values are quoted for sh, and % escaped for cron. Both commands
    are quiet when there is nothing to do, never overlap (a second tick exits
    at once) and never hang (statement, lock and connect timeouts).
    --install is idempotent: it replaces the block between the etlctl markers
    and keeps the rest of the crontab.
    """
    from etlctl.actions import cron as crontab
    from etlctl.views import schedule as views

    result = crontab.crontab(settings(), every, log_path, install_it=install, broker=broker_settings())
    views.show_cron(result)
