"""`etlctl history`: a job's audit rows (etlctl.audit), as a table or JSON.

Every state change etlctl makes writes one audit row in the same statement:
who (database user), from which host and process, with which command, and
the details (the step and phase set, the reset-flow action and its reason,
what a forced reset overrode).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from etlctl import render
from etlctl.errors import UsageError

HEADERS = ["TIME", "FROM → TO", "TOKEN", "COMMAND", "HOST", "WHO", "DETAIL"]


def parse_since(text: str | None) -> tuple[str | None, float | None]:
    """--since: an ISO time (naive: in the database zone), or a duration ago ('30m', '2h')."""
    if text is None:
        return None, None
    from etlctl.config import parse_duration

    try:
        return None, parse_duration(text, "--since")
    except UsageError:
        pass
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(message=f"invalid --since {text!r}: expected an ISO time such as 2026-11-28T10:00:00-05:00 "
                                 "or a duration ago such as 30m or 2h") from None
    return text, None


def read(session, job_id: int, since: str | None, limit: int) -> list[dict]:
    iso, seconds = parse_since(since)
    return session.all("history", job_id=job_id, since=iso, since_seconds=seconds, limit=limit)


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
        when = f", next at {render.clock_time(datetime.fromisoformat(deadline))}" if isinstance(deadline, str) and _iso(deadline) else ""
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
    token = row["token"]
    return [render.when(row["at"]), f"{row['from_state'] or '-'} → {row['to_state'] or '-'}",
            token[:8] if isinstance(token, str) else "-", row["command"], f"{row['host']}:{row['pid']}",
            row["db_user"], render.truncate(describe(row["details"]), 90) or "-"]


def _iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
