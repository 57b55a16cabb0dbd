"""`etlctl history`: a job's audit rows (etlctl.audit).

Every state change etlctl makes writes one audit row in the same statement:
who (database user), from which host and process, with which command, and
the details (the step and phase set, the reset-flow action and its reason,
what a forced reset overrode).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from etlctl.core.job import JobRef
from etlctl.errors import JobNotFound, UsageError
from etlctl.store import jobs


def parse_since(text: str | None) -> tuple[str | None, float | None]:
    """--since: an ISO time (naive: in the database zone), or a duration ago ('30m', '2h')."""
    if text is None:
        return None, None
    from etlctl.core.humanize import MAX_SINCE, parse_duration

    try:
        parse_duration(text, "--since")
    except UsageError:
        pass  # not a duration: an ISO time?
    else:
        return None, parse_duration(text, "--since", MAX_SINCE)  # a duration ago; too far back is an error
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(message=f"invalid --since {text!r}: expected an ISO time such as 2026-11-28T10:00:00-05:00 "
                                 "or a duration ago such as 30m or 2h") from None
    return text, None


@dataclass(frozen=True)
class History:
    job_id: int | None  # None: every job's (of `tenant`)
    rows: list[dict]  # the newest `limit` audit rows (since `since`), oldest first
    total: int  # how many there are in all
    tenant: str | None = None


def read(session, ref: JobRef | int | None, since: str | None, limit: int, tenant: str | None = None) -> History:
    """A job's audit rows; a job that no longer exists keeps its history, one that never did is NotFound.
    Without a job (``ref`` None), every job's, or with ``tenant`` that tenant's."""
    iso, seconds = parse_since(since)
    if ref is None:
        ids = jobs.tenant_ids(session, tenant)
        rows = session.all("history_all", tenant_ids=ids, since=iso, since_seconds=seconds, limit=limit)
        return History(None, rows, rows[0]["total"] if rows else 0, tenant)
    job_id = jobs.resolve(session, ref)
    rows = session.all("history", job_id=job_id, since=iso, since_seconds=seconds, limit=limit)
    if not rows and not session.one("job_exists", job_id=job_id)["found"]:
        raise JobNotFound(ref=ref)
    return History(job_id, rows, rows[0]["total"] if rows else 0)
