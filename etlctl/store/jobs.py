"""Finding jobs by what the user typed, and reading them (`job_row`) as core Job values."""

from __future__ import annotations

from etlctl.core.job import Job, JobRef
from etlctl.errors import AmbiguousJob, JobNotFound, NotFound


def resolve(session, ref: JobRef | int) -> int:
    """The job id for JOB (or for a job id, that id); a name costs one query, an id none."""
    if isinstance(ref, int):
        return ref
    if ref.job_id is not None:
        return ref.job_id
    found = session.all("find_jobs", ref=ref.text, ref_is_id=ref.text.isdigit(), tenant=ref.tenant)
    if not found:
        raise JobNotFound(ref=str(ref))
    if len(found) > 1:
        candidates = ", ".join(f"{r['id']} ({r['job_name']}, tenant {r['tenant_name'] or r['tenant_id']})" for r in found)
        raise AmbiguousJob(name=ref.text, count=len(found), candidates=candidates)
    return found[0]["id"]


def load(session, job_id: int, ref: object = None) -> Job:
    row = session.one("job_detail", job_id=job_id)
    if row is None:
        raise JobNotFound(ref=ref if ref is not None else job_id)
    return Job.from_row(row)


def check_tenant(session, tenant: str | None) -> None:
    """An unknown --tenant exits 5, rather than looking like a tenant without jobs."""
    if tenant is not None and not session.one("tenant_exists", tenant=tenant)["found"]:
        raise NotFound(message=f"no tenant {tenant!r}")


def tenant_ids(session, tenant: str | None) -> list[int] | None:
    """The ids of the tenants --tenant names (None: no --tenant, every tenant); an unknown
    one exits 5, rather than looking like a tenant without jobs."""
    if tenant is None:
        return None
    ids = session.one("tenant_ids", tenant=tenant)["ids"]
    if not ids:
        raise NotFound(message=f"no tenant {tenant!r}")
    return list(ids)
