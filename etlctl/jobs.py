"""Finding jobs and reading them (with their kind's rules and the clock)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from etlctl import rules
from etlctl.errors import AmbiguousJob, JobNotFound, UsageError


@dataclass(frozen=True)
class JobRef:
    """What the user typed: JOB (an id or a name) and maybe --tenant."""

    text: str
    tenant: str | None = None

    @property
    def job_id(self) -> int | None:
        """The id, when JOB is one and no --tenant asks for a name lookup."""
        return int(self.text) if self.text.isdigit() and self.tenant is None else None

    def __str__(self) -> str:
        shown = self.text if self.text.isdigit() else repr(self.text)
        return shown if self.tenant is None else f"{shown} in tenant {self.tenant!r}"


def parse_ref(text: str, tenant: str | None = None) -> JobRef:
    text = (text or "").strip()
    if not text:
        raise UsageError(message="JOB must be a job id or a job name")
    if text.isdigit() and len(text) > 9:
        raise UsageError(message=f"job id {text} is out of range")
    return JobRef(text, tenant.strip() if tenant else None)


def resolve(session, ref: JobRef) -> int:
    """The job id for JOB; a name costs one query, an id none."""
    if ref.job_id is not None:
        return ref.job_id
    found = session.all("find_jobs", ref=ref.text, ref_is_id=ref.text.isdigit(), tenant=ref.tenant)
    if not found:
        raise JobNotFound(ref=str(ref))
    if len(found) > 1:
        candidates = ", ".join(f"{r['id']} ({r['job_name']}, tenant {r['tenant_name'] or r['tenant_id']})" for r in found)
        raise AmbiguousJob(name=ref.text, count=len(found), candidates=candidates)
    return found[0]["id"]


@dataclass(frozen=True)
class Job:
    """One row of `job_detail`: the job, its kind's rules, and the database's now."""

    row: dict

    def __getattr__(self, name: str):
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def rules(self) -> tuple[rules.StepRule, ...] | None:
        return rules.rules_from_rows(self.row["kind_steps"])

    @property
    def overall(self) -> object:
        status = self.row["status"]
        return status.get("overall") if isinstance(status, dict) else None

    @property
    def token(self) -> object:
        status = self.row["status"]
        return status.get("token") if isinstance(status, dict) else None

    @property
    def finished_at(self) -> datetime | None:
        return self.row["last_run_finished_at"]

    def completion(self) -> rules.Completion:
        return rules.evaluate(self.rules, self.row["status"])

    def label(self) -> str:
        return f"job {self.row['id']} ({self.row['job_name']}, tenant {self.row['tenant_name'] or self.row['tenant_id']})"


def load(session, job_id: int, ref: object = None) -> Job:
    row = session.one("job_detail", job_id=job_id)
    if row is None:
        raise JobNotFound(ref=ref if ref is not None else job_id)
    return Job(row)


def check_tenant(session, tenant: str | None) -> None:
    """An unknown --tenant exits 5, rather than looking like a tenant without jobs."""
    from etlctl.errors import NotFound

    if tenant is not None and not session.one("tenant_exists", tenant=tenant)["found"]:
        raise NotFound(message=f"no tenant {tenant!r}")
