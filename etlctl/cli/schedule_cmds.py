"""Scheduling: schedule-next, the queue, and cron."""

from __future__ import annotations

import click

from etlctl.cli.options import app, command_name, connection_options, dry_run_option, example, output_options
from etlctl.core.rules import PHASES


@click.command("schedule-next")
@click.option("--dry-run", is_flag=True, help="Run the tick in a transaction and roll it back: show what it would start.")
@click.option("--explain", is_flag=True, help="Also say, for every job not started, why not.")
@click.option("--tenant", metavar="TENANT", help="Only this tenant's jobs (id or name).")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="Most jobs to start in this tick.")
@click.option("--chain-grace", metavar="SECONDS", default="60", show_default=True,
              help="Queue a RUNNING job's next step only when nothing touched the job for this long.")
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
    """
    from etlctl.views import render
    from etlctl.actions import schedule as scheduler

    from etlctl.core.humanize import parse_duration

    grace = parse_duration(chain_grace, "--chain-grace")
    with app().session(command_name()) as session:
        if tenant is not None:
            from etlctl.store import jobs

            jobs.check_tenant(session, tenant)
        result = scheduler.tick(session, tenant=tenant, limit=limit, chain_grace=grace, dry_run=dry_run,
                                explain=explain)
    if as_json:
        render.emit_json({
            "dry_run": dry_run, "locked_out": not result.locked,
            "started": [_started_record(r) for r in result.started], "skipped": result.skipped,
            "queued_next_steps": result.chained,
            **({"not_started": result.not_started} if explain else {}),
        })
        return
    if not result.locked:
        if explain or dry_run:
            render.note("etlctl: another schedule-next tick is running on this database; nothing to do")
        return
    verb = "would start" if dry_run else "started"
    for row in result.started:
        click.echo(f"{verb} job {row['id']} ({row['job_name']}): {row['from_state']} -> RUNNING, run {row['token']}, "
                   f"queued {row['first_step']} extraction")
    for row in result.skipped:
        click.echo(f"skipped integration {row['integration_id']}: {row['reason']}")
    for row in result.chained:
        click.echo(f"{'would queue' if dry_run else 'queued'} job {row['job_id']}: {row['step']} extraction (next step)")
    if explain:
        for row in result.not_started:
            click.echo(f"not starting job {row['job_id']} ({row['job_name']}, tenant {row['tenant'] or row['tenant_id']}): "
                       f"{row['reason']}")

def _started_record(row: dict) -> dict:
    return {"job_id": row["id"], "job_name": row["job_name"], "tenant_id": row["tenant_id"],
            "integration_id": row["integration_id"], "from": row["from_state"], "token": row["token"],
            "first_step": row["first_step"], "queue_id": row["queue_id"], "retry_count": row["retry_count"]}

@click.group()
def queue() -> None:
    """List, claim and finish queued extraction messages (etlctl.queue)."""

@queue.command("ls")
@click.option("--pending", is_flag=True, help="Only messages not done yet.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Most messages, newest.")
@connection_options
@output_options
@example("""
etlctl queue ls --pending
""")
def queue_ls(pending, limit, as_json) -> None:
    """List queued messages, oldest first (the newest --limit of them)."""
    from etlctl.views import render

    with app().session(command_name()) as session:
        rows = session.all("queue_list", pending=pending, limit=limit)
    if as_json:
        render.emit_json(rows)
        return
    table = [[r["id"], r["job_id"], r["job_name"], r["step"], r["phase"], r["token"],
              "yes" if r["current_run"] else "no (stale)",
              "done" if r["done_at"] else (f"claimed by {r['claimed_by']}" if r["claimed_at"] else "pending"),
              r["created_at"]] for r in rows]
    if table:
        render.emit_table(table, ["ID", "JOB", "NAME", "STEP", "PHASE", "TOKEN", "CURRENT RUN", "STATE", "QUEUED"])
    else:
        render.note("the queue is empty" if not pending else "no pending messages")

@queue.command("claim")
@click.option("--phase", type=click.Choice(PHASES), default="extraction", show_default=True)
@click.option("--worker", required=True, metavar="NAME", help="Who claims it (recorded as claimed_by).")
@connection_options
@output_options
@dry_run_option
@example("""
etlctl queue claim --worker shell-1 --json
""")
def queue_claim(phase, worker, as_json, dry_run) -> int:
    """Take the oldest unclaimed message of a phase and print it.

    Concurrent claimers never get the same message (FOR UPDATE SKIP LOCKED).
    Exits 3 when there is nothing to claim.
    """
    from etlctl.views import render
    from etlctl.actions import schedule as scheduler
    from etlctl.errors import NOT_FINISHED

    with app().session(command_name(), dry_run=dry_run) as session:
        row = scheduler.claim(session, phase=phase, worker=worker)
    if row is None:
        if as_json:
            render.emit_json(None)
        render.note(f"etlctl: no unclaimed {phase} message")
        return NOT_FINISHED
    if as_json:
        render.emit_json({**row, "dry_run": dry_run})
    else:
        click.echo(f"{'would claim' if dry_run else 'claimed'} message {row['id']}: job {row['job_id']} {row['step']} "
                   f"{row['phase']} (run {row['token']})")
    return 0

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
    from etlctl.views import render
    from etlctl.actions import schedule as scheduler

    with app().session(command_name(), dry_run=dry_run) as session:
        outcome = scheduler.done(session, message_id)
    if as_json:
        render.emit_json({"id": message_id, "result": outcome, "dry_run": dry_run})
    elif outcome == "already":
        click.echo(f"message {message_id} was already done")
    else:
        click.echo(f"message {message_id} {'would be ' if dry_run else ''}done")

@click.command()
@click.option("--every", default="1m", show_default=True, metavar="INTERVAL",
              help="How often: 1m..59m or 1h..23h.")
@click.option("--install", is_flag=True, help="Write the block into your crontab, replacing an earlier etlctl block.")
@click.option("--log", "log_path", metavar="FILE", help="Where the ticks' output goes [default: ETLCTL_HOME/cron.log].")
@connection_options
@example("""
etlctl cron
etlctl --dsn postgresql://etl@db.internal/etl cron --every 5m --install
""")
def cron(every, install, log_path) -> None:
    """Print (or install) the crontab block that runs schedule-next and sweep.

    The block sets ETLCTL_DSN (without any password: keep that in ~/.pgpass),
    PATH, and sends output to a log file. Both commands are quiet when there
    is nothing to do, never overlap (a second tick exits at once) and never
    hang (statement, lock and connect timeouts). --install is idempotent: it
    replaces the block between the etlctl markers and keeps the rest.
    """
    from etlctl.actions import cron as crontab
    from etlctl.views import render

    settings = app().settings
    block = crontab.block(every, settings, log_path)
    if settings.dsn and crontab.dsn_without_password(settings.dsn)[1]:
        render.note("etlctl: the DSN's password is not written to the crontab: put it in ~/.pgpass")
    if not install:
        click.echo(block, nl=False)
        return
    crontab.install(block)
    click.echo(f"installed the etlctl block into your crontab (runs every {every})")
