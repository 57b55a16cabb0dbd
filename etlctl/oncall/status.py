"""`etlctl status` and `etlctl kinds`: jobs and job kinds as they are now. Read-only."""

from __future__ import annotations

from dataclasses import dataclass

from etlctl.core.job import Job, JobRef
from etlctl.store import jobs


@dataclass(frozen=True)
class Overview:
    rows: list[dict]  # jobs_overview rows, at most `limit`
    limit: int
    more: bool  # the database holds more jobs than `limit`


def overview(session, *, tenant: str | None, limit: int) -> Overview:
    """Every job (of one tenant), first by id; an unknown tenant is NotFound rather than no jobs."""
    rows = session.all("jobs_overview", tenant=tenant, limit=limit + 1)  # one more: are there more?
    if not rows:
        jobs.check_tenant(session, tenant)
    return Overview(rows[:limit], limit, len(rows) > limit)


def job(session, ref: JobRef) -> Job:
    """One job, with its kind's step rules and its completion verdict."""
    return jobs.load(session, jobs.resolve(session, ref), ref)


def kinds(session) -> list[dict]:
    """Every job kind with its ordered steps and their rules."""
    return session.all("kinds_list")


def completions(session, what: str, prefix: str, tenant: str | None = None) -> list[dict]:
    """Values for shell completion that start with ``prefix``: ``what`` is "jobs" (ids and
    names, of ``tenant`` when given) or "tenants" (names and ids); each with a few words of help."""
    if what == "jobs":
        return session.all("complete_jobs", prefix=prefix, tenant=tenant)
    return session.all("complete_tenants", prefix=prefix)
