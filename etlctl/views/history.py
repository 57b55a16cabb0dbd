"""How `etlctl history` prints audit rows: a table, or JSON records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from etlctl.core import humanize
from etlctl.core.job import short_token
from etlctl.views import render

HEADERS = ["TIME", "FROM → TO", "TOKEN", "COMMAND", "HOST", "WHO", "DETAIL"]


def record(row: Mapping) -> dict:
    return {"id": row["id"], "at": row["at"], "job_id": row["job_id"], "tenant_id": row["tenant_id"],
            "from": row["from_state"], "to": row["to_state"], "token": row["token"], "command": row["command"],
            "host": row["host"], "pid": row["pid"], "who": row["db_user"], "details": row["details"]}


def describe(details: object) -> str:
    """The details of one audit row in a few words."""
    d = details if isinstance(details, Mapping) else {}
    if "step" in d:
        return f"{d.get('step')}.{d.get('phase')} {d.get('from') or 'unset'} → {d.get('to')}"
    action = d.get("action")
    if action == "reset" and d.get("force"):
        overridden = d.get("overridden") or []
        return "forced reset" + (f"; overrode: {'; '.join(overridden)}" if overridden else "")
    if action:
        reason = d.get("reason") or ""
        deadline = d.get("reset_deadline")
        when = f", next at {humanize.clock_time(datetime.fromisoformat(deadline))}" if isinstance(deadline, str) and _iso(deadline) else ""
        if reason.startswith(f"{action}:"):
            reason = reason[len(action) + 1:].strip()
        return f"{action}{when}: {reason}" if reason else f"{action}{when}"
    if "first_step" in d:
        retry = d.get("retry_count")
        return f"started; queued {d['first_step']} extraction" + (f" (retry {retry})" if retry else "")
    if "last_sync_date" in d or "reset_deadline" in d:
        return f"completed; last_sync_date {d.get('last_sync_date') or '-'}"
    return ""


def table_row(row: Mapping) -> list:
    return [humanize.when(row["at"]), f"{row['from_state'] or '-'} → {row['to_state'] or '-'}",
            short_token(row["token"]), row["command"], f"{row['host']}:{row['pid']}",
            row["db_user"], render.truncate(describe(row["details"]), 90) or "-"]


def _iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def show(history, as_json: bool, since: str | None) -> None:
    """The rows as a table (or JSON records); a note when there are none, or more than shown.
    Without a job, each row also says which job it is."""
    rows = history.rows
    whose = (f"job {history.job_id}" if history.job_id is not None
             else f"tenant {history.tenant}" if history.tenant is not None else "the database")
    if as_json:
        render.emit_json([record(r) for r in rows])
    elif not rows:
        render.note(f"{whose}: no audited changes" + (f" since {since}" if since else ""))
    elif history.job_id is None:
        render.emit_table([[r["job_id"], *table_row(r)] for r in rows], ["JOB", *HEADERS])
    else:
        render.emit_table([table_row(r) for r in rows], HEADERS)
    if history.total > len(rows):
        render.note(f"showing the newest {len(rows)} of {history.total} changes "
                    f"(use --limit{'' if since else ' or --since'})")
