"""The reset flow: complete, check, wait-and-reset, reset, sweep, step."""

from __future__ import annotations

import contextlib

import click

from etlctl.core.job import parse_ref

from etlctl.cli.options import (
    timings_from,
    app,
    command_name,
    connection_options,
    dry_run_option,
    example,
    job_argument,
    output_options,
    timing_options,
)

from etlctl.core.rules import PHASE_VALUES, PHASES


def _session(dry_run: bool = False):
    return app().session(command_name(), dry_run=dry_run)


def _job_id(session, job: str, tenant: str | None) -> int:
    from etlctl.store import jobs

    return jobs.resolve(session, parse_ref(job, tenant))


@click.command()
@job_argument
@click.option("--token", metavar="T", help="Complete only this run; a stale token changes nothing and exits 4.")
@click.option("--sync-date", metavar="ISO", help="Extraction date to record as last_sync_date [default: leave it unchanged].")
@click.option("--delay", metavar="SECONDS", help="Wait before the first reset check [env: ETLCTL_DELAY; default: 30].")
@connection_options
@output_options
@dry_run_option
@example("""
etlctl complete 7 --token 6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10
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
    from etlctl.core import humanize
    from etlctl.views import render

    timings = timings_from(delay, None, None)
    if sync_date is not None:
        _check_iso(sync_date)
    with _session(dry_run) as session:
        job_id = _job_id(session, job, tenant)
        result = flow.complete(session, job_id, token=token, sync_date=sync_date, delay=timings.delay)
    if as_json:
        render.emit_json({**result, "dry_run": dry_run})
    elif result["result"] == "already":
        click.echo(f"job {job_id} is already FINISHED (run {result['token'] or 'without a token'}): nothing to do")
    else:
        from datetime import datetime

        deadline = datetime.fromisoformat(result["status"]["reset_deadline"]).astimezone(result["now"].tzinfo)
        prefix = "would mark" if dry_run else "marked"
        click.echo(f"{prefix} job {job_id} FINISHED (run {result['token'] or 'without a token'}); first reset check at "
                   f"{humanize.clock_time(deadline)} ({humanize.relative(deadline, result['now'])})")


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
@click.option("--backoff", metavar="LIST", help="Waits between checks with --retry [env: ETLCTL_BACKOFF; default: 30,60,180,300].")
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
    """
    from etlctl.actions import flow
    from etlctl.core import humanize
    from etlctl.views import render
    from etlctl.errors import NotFinished

    timings = timings_from(None, backoff, None)
    with _session() as session:
        job_id = _job_id(session, job, tenant)
        if retry:
            def on_retry(attempt, completion, wait):
                render.note(f"check {attempt} of {len(timings.backoff) + 1}: not finished "
                            f"({'; '.join(completion.reasons)}); next check in {humanize.duration(wait)}")

            found, completion, attempts = flow.check_with_retry(session, job_id, timings.backoff, on_retry, ref=job)
        else:
            (found, completion), attempts = flow.check(session, job_id, job), 1
    if as_json:
        render.emit_json({
            "job_id": found.id, "all_finished": completion.all_finished, "steps_status": completion.steps_status,
            "overall": completion.overall, "reasons": list(completion.reasons), "checks": attempts,
        })
    else:
        from etlctl.views import jobs as views

        views.emit_step_grid(views.step_rows(found))
    if not completion.all_finished:
        given_up = f" after {attempts} check{'s' if attempts != 1 else ''}" if retry else ""
        stop = " (a phase failed: waiting cannot help)" if retry and completion.failed else ""
        raise NotFinished(message=f"{found.label()} not finished{given_up}{stop}: {'; '.join(completion.reasons)}")
    if not as_json:
        click.echo(f"{found.label()}: all steps finished")


class _PrintingReporter:
    """wait-and-reset's progress on stderr; the countdown is live on a terminal."""

    def __init__(self) -> None:
        self.last = None

    def decided(self, job, decision) -> None:
        from etlctl.core import lifecycle
        from etlctl.core import humanize
        from etlctl.views import render

        key = (decision.action, decision.stage, decision.attempt, decision.deadline)
        if key == self.last:
            return
        self.last = key
        when = f"{humanize.clock_time(decision.deadline)} ({humanize.relative(decision.deadline, job.now)})" if decision.deadline else ""
        if decision.action == lifecycle.SCHEDULE:
            render.note(f"{job.label()}: first check at {when}")
        elif decision.action == lifecycle.RETRY:
            render.note(f"{job.label()}: {decision.reason}; next check at {when}")
        elif decision.action == lifecycle.WAIT and decision.stage != lifecycle.COOLDOWN:
            render.note(f"{job.label()}: waiting for {decision.reason} at {when}")
        elif decision.action == lifecycle.START_COOLDOWN:
            render.note(f"{job.label()}: {decision.reason}")

    def waiting(self, job, decision, seconds) -> None:
        from etlctl.store import clock
        from etlctl.core import lifecycle
        from etlctl.views import render

        if decision.stage == lifecycle.COOLDOWN:
            render.Countdown(clock.sleep).run(seconds)
        else:
            clock.sleep(seconds)


@click.command("wait-and-reset")
@job_argument
@timing_options
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
    step and exits without waiting or writing.
    """
    from etlctl.actions import flow
    from etlctl.core import lifecycle
    from etlctl.core import humanize
    from etlctl.views import render

    timings = timings_from(delay, backoff, cooldown)
    with _session() as session:
        job_id = _job_id(session, job, tenant)
        if dry_run:
            from etlctl.store import jobs

            found = jobs.load(session, job_id, job)
            decision = lifecycle.decide(found.status, found.rules, found.now, timings, found.finished_at)
            plan = {"job_id": job_id, "action": decision.action, "reason": decision.reason,
                    "deadline": decision.deadline, "attempt": decision.attempt, "dry_run": True}
            code = _dry_run_exit(found, decision)
            if as_json:
                render.emit_json(plan)
            else:
                when = f" at {humanize.when(decision.deadline)} ({humanize.relative(decision.deadline, found.now)})" if decision.deadline else ""
                click.echo(f"{found.label()}: next: {decision.action}{when}: {decision.reason}")
            return code
        outcome = flow.wait_and_reset(session, job_id, timings, _PrintingReporter(), ref=job)
    _print_reset(outcome.job, outcome.reset_row, as_json, by_other=outcome.by_other)


def _dry_run_exit(job, decision) -> int:
    """What the real run would exit with, as far as its first step tells: 4 not FINISHED, 3 gave up."""
    from etlctl import errors
    from etlctl.core import lifecycle

    if decision.action == lifecycle.SKIP:
        if job.overall != "FINISHED" or decision.state.problem:
            return errors.CONFLICT
        return errors.NOT_FINISHED
    return errors.OK


def _print_reset(job, row, as_json, *, by_other=False, overridden=(), dry_run=False) -> None:
    from etlctl.core import humanize
    from etlctl.views import render

    status = row["status"] if row else job.status
    steps = status.get("steps") if isinstance(status, dict) else None
    if as_json:
        render.emit_json({
            "success": row is not None or by_other or job.overall == "READY",
            "job_id": job.id,
            "overall": status.get("overall") if isinstance(status, dict) else None,
            "steps": steps,
            "next_run": row["next_run"] if row else job.next_run,
            "reset_by_other": by_other,
            "forced": bool(overridden),
            "overridden": list(overridden),
            "dry_run": dry_run,
        })
        return
    if row is None and by_other:
        click.echo(f"{job.label()} was reset or restarted by someone else: it is {job.overall} now")
    elif row is None:
        click.echo(f"{job.label()} is already READY: nothing to do")
    else:
        verb = "would reset" if dry_run else "reset"
        click.echo(f"{verb} {job.label()} to READY; next run at {humanize.when(row['next_run'])} "
                   f"({humanize.relative(row['next_run'], row['now'])})")


@click.command()
@job_argument
@click.option("--force", is_flag=True, help="Reset from FINISHED, FAILED or RUNNING whatever the check says (on-call).")
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
    reason. --force resets a FINISHED, FAILED or RUNNING job regardless,
    prints what it overrode and records that in the audit row.
    """
    from etlctl.actions import flow
    from etlctl.views import render

    with _session(dry_run) as session:
        job_id = _job_id(session, job, tenant)
        result = flow.reset(session, job_id, force=force, ref=job)
    if result.overridden:
        render.note(f"etlctl: warning: forced reset of {result.job.label()} overrode: {'; '.join(result.overridden)}")
    _print_reset(result.job, result.row, as_json, overridden=result.overridden, dry_run=dry_run)


@click.command()
@timing_options
@click.option("--batch", type=click.IntRange(min=1, max=100000), default=1000, show_default=True,
              help="Jobs read and written per round trip.")
@connection_options
@output_options
@dry_run_option
@example("""
etlctl sweep
etlctl sweep --dry-run --json
""")
def sweep(delay, backoff, cooldown, batch, as_json, dry_run) -> None:
    """One non-blocking pass of the reset flow over every FINISHED job: the
    cron form of wait-and-reset. It schedules the first check, re-checks on
    the backoff, starts the cool-down, resets, or gives up, for each job whose
    deadline has passed, through the same durable state as wait-and-reset.

    Prints nothing when nothing needed doing; otherwise one row per job it
    acted on. A second sweep running at the same time exits 0 at once.
    """
    from etlctl.actions import flow
    from etlctl.views.jobs import SweepPrinter

    timings = timings_from(delay, backoff, cooldown)
    from etlctl.cli import options

    printer = SweepPrinter(as_json=as_json, dry_run=dry_run, verbose=options.verbose)
    with app().session(command_name()) as session, session.tick_lock("sweep") as taken:
        if not taken:
            printer.busy()
            return
        with session.transaction(rollback=True) if dry_run else contextlib.nullcontext():
            flow.sweep(session, timings, batch=batch, on_batch=printer.batch)
    printer.close()


@click.command()
@job_argument
@click.argument("step_name", metavar="STEP")
@click.argument("phase", metavar="PHASE", type=click.Choice(PHASES))
@click.argument("value", metavar="STATUS", type=click.Choice(PHASE_VALUES))
@click.option("--token", metavar="T", help="Update only this run; a stale token changes nothing and exits 4.")
@connection_options
@output_options
@dry_run_option
@example("""
etlctl step 7 jira_dev_status embedding finished --token 6f1c0a2e-9b1d-4c3e-8f5a-2d7e4b6c9a10
""")
def step(job, tenant, step_name, phase, value, token, as_json, dry_run) -> None:
    """Set one phase of one step: a worker's status update.

    STATUS is idle, running, finished or failed. One guarded jsonb_set on the
    current row, never a read-modify-write, so concurrent workers never lose
    each other's updates. The job must be RUNNING or FINISHED; the step must be
    in its status document or its kind (exit 2 otherwise); a stale token exits 4.
    """
    from etlctl.actions import flow
    from etlctl.views import render

    with _session(dry_run) as session:
        job_id = _job_id(session, job, tenant)
        result = flow.step(session, job_id, step_name=step_name, phase=phase, value=value, token=token)
    if as_json:
        render.emit_json({**result, "dry_run": dry_run})
    elif result["result"] == "already":
        click.echo(f"job {job_id}: {step_name}.{phase} is already {value}")
    else:
        verb = "would set" if dry_run else "set"
        click.echo(f"job {job_id}: {verb} {step_name}.{phase} {result['previous'] or 'unset'} -> {value}")
