"""How the scheduling commands print: a schedule-next tick, the queue, and the crontab block."""

from __future__ import annotations

from etlctl.views import relay as relay_views
from etlctl.views import render


def show_tick(tick, as_json: bool, dry_run: bool, explain: bool) -> None:
    """What a tick started, skipped and queued (and with --explain, why each other job did not start).

    Quiet when it did nothing; a tick locked out by another says so only when a person asked
    (--explain or --dry-run), not in cron's mail.
    """
    handled = tick.published.handled if tick.published is not None else []
    if as_json:
        render.emit_json({
            "dry_run": dry_run, "locked_out": not tick.locked,
            "started": [started_record(r) for r in tick.started], "skipped": tick.skipped,
            "queued_next_steps": tick.chained,
            **({"not_started": tick.not_started} if explain else {}),
            # With a broker: what became of each message it queued (null: not published by this tick).
            "messages": [relay_views.record(h) for h in handled] if tick.published is not None else None,
        })
        return
    if not tick.locked:
        if explain or dry_run:
            render.note("etlctl: another schedule-next tick is running on this database; nothing to do")
        return
    lines = tick_lines(tick, dry_run)
    lines += [relay_views.describe(h) for h in handled]
    if explain:
        lines += [f"not starting job {row['job_id']} ({row['job_name']}, tenant {row['tenant'] or row['tenant_id']}): "
                  f"{row['reason']}" for row in tick.not_started]
    if lines:
        render.lines(lines)


def tick_lines(tick, dry_run: bool = False, skipped: bool = True) -> list[str]:
    """A tick's starts, the integrations it skipped (another scheduler won them) and the next steps it queued."""
    verb = "would start" if dry_run else "started"
    lines = [f"{verb} job {row['id']} ({row['job_name']}): {row['from_state']} -> RUNNING, run {row['token']}, "
             f"queued {row['first_step']} extraction" for row in tick.started]
    if skipped:
        lines += [f"skipped integration {row['integration_id']}: {row['reason']}" for row in tick.skipped]
    lines += [f"{'would queue' if dry_run else 'queued'} job {row['job_id']}: {row['step']} extraction (next step)"
              for row in tick.chained]
    return lines


def started_record(row: dict) -> dict:
    return {"job_id": row["id"], "job_name": row["job_name"], "tenant_id": row["tenant_id"],
            "integration_id": row["integration_id"], "from": row["from_state"], "token": row["token"],
            "first_step": row["first_step"], "queue_id": row["queue_id"], "retry_count": row["retry_count"]}


def show_queue(rows: list[dict], as_json: bool, pending: bool, more: bool = False) -> None:
    _queue_rows(rows, as_json, pending)
    if more:
        render.note(f"showing the newest {len(rows)} messages; there are more (use --limit)")


def _queue_rows(rows: list[dict], as_json: bool, pending: bool) -> None:
    if as_json:
        render.emit_json(rows)
        return
    table = [[r["id"], r["job_id"], r["job_name"], r["step"], r["phase"], r["token"],
              "yes" if r["current_run"] else "no (stale)", queue_state(r), r["queue_name"], r["created_at"]]
             for r in rows]
    if table:
        render.emit_table(table, ["ID", "JOB", "NAME", "STEP", "PHASE", "TOKEN", "CURRENT RUN", "STATE", "TO",
                                  "QUEUED"])
    else:
        render.note("the queue is empty" if not pending else "no pending messages")


def queue_state(row: dict) -> str:
    """pending (with its failed attempts), published, skipped (why), claimed by a worker, or done."""
    state = row["state"]
    if state == "published":
        return f"published {render.when_text(row['published_at'])}"
    if state == "skipped":
        return f"skipped: {row['skip_reason']}"
    if state == "claimed":
        return f"claimed by {row['claimed_by']}"
    if state == "pending" and row["attempts"]:
        tries = f"{row['attempts']} attempt{'s' if row['attempts'] != 1 else ''}"
        return f"pending ({tries}; last: {render.truncate(row['last_error'], 60)})"
    return state


def show_claim(row: dict | None, phase: str, as_json: bool, dry_run: bool) -> None:
    if row is None:
        if as_json:
            render.emit_json(None)
        render.reason(f"etlctl: no unclaimed {phase} message")
    elif as_json:
        render.emit_json({**row, "dry_run": dry_run})
    else:
        render.line(f"{'would claim' if dry_run else 'claimed'} message {row['id']}: job {row['job_id']} {row['step']} "
                    f"{row['phase']} (run {row['token']})")


def show_done(message_id: int, outcome: str, as_json: bool, dry_run: bool) -> None:
    if as_json:
        render.emit_json({"id": message_id, "result": outcome, "dry_run": dry_run})
    elif outcome == "already":
        render.line(f"message {message_id} was already done")
    else:
        render.line(f"message {message_id} {'would be ' if dry_run else ''}done")


def show_cron(crontab) -> None:
    """The block (or that it was installed); a note when the DSN's password was left out."""
    if crontab.password_left_out:
        render.note("etlctl: the DSN's password is not written to the crontab: put it in ~/.pgpass")
    if crontab.broker_password_left_out:
        render.note("etlctl: the broker's password is not written to the crontab: put it in a 0600 file named by "
                    "ETLCTL_AMQP_PASSWORD_FILE")
    if crontab.installed:
        render.line(f"installed the etlctl block into your crontab (runs every {crontab.every})")
    else:
        render.write(crontab.block)
