"""The reset flow: complete, check, wait-and-reset, reset, sweep, step.

Each command parses, makes one call into :mod:`etlctl.actions.flow` (or
:mod:`etlctl.actions.wait_and_reset`) and shows the result with
:mod:`etlctl.views.flow`.
"""

from __future__ import annotations

import click

from etlctl.cli.options import (
    broker_options,
    broker_settings,
    connection_options,
    decided,
    dry_run_option,
    example,
    invocation,
    job_argument,
    output_options,
    session,
    tenant_option,
    timing_options,
    timings_from,
)
from etlctl.core.job import parse_ref
from etlctl.core.rules import PHASE_VALUES, PHASES


@click.command()
@job_argument
@click.option("--token", metavar="T", help="Complete only this run: its token, or its first 8 characters or more (as "
                                           "`history` shows it); a stale token changes nothing and exits 4.")
@click.option("--sync-date", metavar="ISO", help="Extraction date to record as last_sync_date [default: leave it unchanged].")
@click.option("--delay", metavar="DURATION", help="Wait before the first reset check, at most 1d [env: ETLCTL_DELAY; default: 30s].")
@connection_options
@output_options
@dry_run_option
@example("""
etlctl complete 7 --token 6f1c0a2e
etlctl complete Jira --tenant acme --sync-date 2026-11-28T10:00:00-05:00 --json
""")
def complete(job, tenant, token, sync_date, delay, as_json, dry_run) -> None:
    """Mark a RUNNING job FINISHED, as the existing complete_etl_job() does:
    sets last_run_finished_at, clears next_run and error_message, sets
    retry_count 0, sets last_sync_date only when --sync-date is given, and
    records a pending reset (reset_deadline = now + delay).

    Running it again on the same run does nothing and says so (exit 0). From
    any other state, or with a token that is not the current run's, it exits
    4 and changes nothing.
    """
    from etlctl.actions import flow
    from etlctl.views import flow as views

    timings = timings_from(delay, None, None)
    if sync_date is not None:
        _check_iso(sync_date)
    ref = parse_ref(job, tenant)
    with session(dry_run) as s:
        result = flow.complete(s, ref, token=token, sync_date=sync_date, delay=timings.delay)
    views.show_complete(result, as_json, dry_run)


_ISO_TIME = r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?"


def _check_iso(value: str) -> None:
    """A calendar date and time that both Python and PostgreSQL read the same way."""
    import re
    from datetime import datetime

    from etlctl.errors import UsageError

    try:
        if not re.fullmatch(_ISO_TIME, value):
            raise ValueError
        datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(message=f"invalid --sync-date {value!r}: expected an ISO 8601 time such as 2026-11-28T10:00:00-05:00") from None


@click.command()
@job_argument
@click.option("--retry", is_flag=True, help="Check again after each wait of the backoff, like the UI.")
@click.option("--backoff", metavar="LIST", help="Waits between checks with --retry, each at most 1d [env: ETLCTL_BACKOFF; default: 30,60,180,300].")
@broker_options
@connection_options
@output_options
@example("""
etlctl check 7
etlctl check 7 --retry --backoff 5,10 --json
""")
def check(job, tenant, retry, backoff, as_json) -> None:
    """Check that every step of a job is finished (the checkJobCompletion endpoint).

    Exit 0 when all steps are finished and the job is FINISHED, 3 when not.
    --json prints the flow document's response: all_finished and
    steps_status, plus overall and the reasons. With --retry it checks again
    after 30, 60, 180 and 300 seconds, stops at once when a phase has failed,
    and gives up (exit 3) naming what is not finished.

    With a message broker configured (--amqp-url, ETLCTL_AMQP_URL or the
    RABBITMQ_* variables), a job whose steps are all finished is still not
    finished while a message of its run waits in its tenant's extraction,
    transform or embedding queue, as the existing reset scheduler has it;
    the reason names the queue. Exit 8 when the broker cannot be reached.
    """
    from etlctl.actions import flow, peeking
    from etlctl.views import flow as views

    timings = timings_from(None, backoff, None)
    ref = parse_ref(job, tenant)
    with session() as s, peeking.looking(broker_settings()) as look:
        result = flow.check(s, ref, backoff=timings.backoff if retry else None, on_retry=views.check_retry_note,
                            look=look)
    decided(result.failure.exit_code if result.failure is not None else 0)
    views.show_check(result, as_json)
    if result.failure is not None:
        raise result.failure


@click.command("wait-and-reset")
@job_argument
@timing_options
@broker_options
@connection_options
@output_options
@dry_run_option
@example("""
etlctl wait-and-reset 7
etlctl wait-and-reset 7 --delay 2 --backoff 2,4 --cooldown 3
""")
def wait_and_reset(job, tenant, delay, backoff, cooldown, as_json, dry_run) -> int:
    """Do what the browser tab does after a job FINISHES, in one command:
    wait the delay, check (retrying after 30, 60, 180, 300 s), count down
    "Job completed. Resetting in 30 seconds...", then reset to READY.

    Durable: before every wait it writes the deadline and the attempt into
    the job's status document, so a rerun (or `etlctl sweep`) carries on
    where it stopped. A deadline already written (by `complete`, an earlier
    run or a sweep) is kept: --delay only sets the first check of a job that
    has none. Giving up records error_message, leaves the job
    FINISHED and exits 3. A job that is not FINISHED exits 4. Ctrl-C exits
    130 and SIGTERM 143, with nothing half-written. --dry-run shows the next
    step and exits without waiting or writing. With a message broker
    configured, a check also fails while a message of the run waits in the
    tenant's queues (see `etlctl check --help`).
    """
    from etlctl.actions import peeking
    from etlctl.actions import wait_and_reset as waiting
    from etlctl.views import flow as views

    timings = timings_from(delay, backoff, cooldown)
    ref = parse_ref(job, tenant)
    with session(dry_run) as s, peeking.looking(broker_settings()) as look:
        outcome = waiting.wait_and_reset(s, ref, timings, views.WaitPrinter(timings.checks), look=look)
    decided(outcome.exit_code)
    views.show_wait_and_reset(outcome, as_json)
    return outcome.exit_code


@click.command()
@job_argument
@click.option("--force", is_flag=True, help="Reset from FINISHED, FAILED, RUNNING or a malformed state whatever the check says (on-call).")
@connection_options
@output_options
@dry_run_option
@example("""
etlctl reset 7
etlctl reset 7 --force --dry-run
""")
def reset(job, tenant, force, as_json, dry_run) -> None:
    """Reset a FINISHED job to READY (the resetJobStatus endpoint): every phase
    of every step idle (order, display names and other keys kept), overall
    READY, error_message, token and reset keys cleared, next_run = now +
    schedule_interval_minutes.

    Only from FINISHED with the check passing; otherwise exit 4 with the
    reason. --force resets a FINISHED, FAILED or RUNNING job regardless (or
    one whose status document is malformed), prints what it overrode and
    records that in the audit row; parts of the document etlctl cannot read
    (nested too deep, too long) it drops, keeping every other key, and says so.
    """
    from etlctl.actions import flow
    from etlctl.views import flow as views

    ref = parse_ref(job, tenant)
    with session(dry_run) as s:
        result = flow.reset(s, ref, force=force)
    views.show_reset(result, as_json, dry_run)


@click.command()
@tenant_option("jobs")
@timing_options
@click.option("--batch", type=click.IntRange(min=1, max=100000), default=1000, show_default=True,
              help="Jobs read and written per round trip.")
@broker_options
@connection_options
@output_options
@dry_run_option
@example("""
etlctl sweep
etlctl sweep --tenant acme --dry-run --json
""")
def sweep(tenant, delay, backoff, cooldown, batch, as_json, dry_run) -> None:
    """One non-blocking pass of the reset flow over every FINISHED job: the
    cron form of wait-and-reset. It schedules the first check, re-checks on
    the backoff, starts the cool-down, resets, or gives up, for each job whose
    deadline has passed, through the same durable state as wait-and-reset.

    Prints nothing when nothing needed doing; otherwise one row per job it
    acted on, and, on every pass until someone fixes it, one per FINISHED job
    whose reset state is malformed. A second sweep running at the same time
    exits 0 at once.

    With a message broker configured, a job about to be reset (or to start
    its cool-down) is checked again against its tenant's queues, each queue
    looked at once per pass: while a message of its run waits there, the
    check fails as any other. When the broker cannot be reached those jobs
    are left as they are for the next pass, the others advance, and sweep
    exits 8.
    """
    from etlctl.actions import flow, peeking
    from etlctl.errors import QueuesNotLookedAt
    from etlctl.views import flow as views

    timings = timings_from(delay, backoff, cooldown)
    printer = views.SweepPrinter(as_json=as_json, dry_run=dry_run, verbose=invocation().verbose)
    with session(dry_run) as s, peeking.looking(broker_settings()) as look:
        swept = flow.sweep_tick(s, timings, batch=batch, on_batch=printer.batch, tenant=tenant, look=look)  # rows stream
    printer.finish(swept)
    if look is not None and look.error is not None:
        count = len(look.unjudged)
        error = QueuesNotLookedAt(look.error.detail, problem=look.error.message,
                                  jobs=f"{count} job{'s' if count != 1 else ''} whose steps are all finished "
                                       f"({', '.join(map(str, look.unjudged[:10]))}{', ...' if count > 10 else ''})")
        error.exit_code = look.error.exit_code  # 8 unreachable; 1 a permission the broker's user lacks
        raise error


@click.command()
@job_argument
@click.argument("step_name", metavar="STEP")
@click.argument("phase", metavar="PHASE", type=click.Choice(PHASES))
@click.argument("value", metavar="STATUS", type=click.Choice(PHASE_VALUES))
@click.option("--token", metavar="T", help="Update only this run: its token, or its first 8 characters or more (as "
                                           "`history` shows it); a stale token changes nothing and exits 4.")
@connection_options
@output_options
@dry_run_option
@example("""
etlctl step 7 jira_dev_status embedding finished --token 6f1c0a2e
""")
def step(job, tenant, step_name, phase, value, token, as_json, dry_run) -> None:
    """Set one phase of one step: a worker's status update.

    STATUS is idle, running, finished or failed. One guarded jsonb_set on the
    current row, never a read-modify-write, so concurrent workers never lose
    each other's updates. The job must be RUNNING or FINISHED; the step must be
    in its status document or its kind (exit 2 otherwise); a stale token exits 4.
    """
    from etlctl.actions import flow
    from etlctl.views import flow as views

    ref = parse_ref(job, tenant)
    with session(dry_run) as s:
        result = flow.step(s, ref, step_name=step_name, phase=phase, value=value, token=token)
    views.show_step(result, as_json, dry_run)
