"""A job as etlctl reads it (one row of the `job_row` query), and what a user
types to name one. Pure values: no database here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime

from etlctl.core import rules
from etlctl.errors import UsageError


# A run token may be given by its first TOKEN_PREFIX characters or more, as long as no
# other run of the job starts the same way (the write checks that); history shows that much.
TOKEN_PREFIX = 8


def short_token(token: object) -> str:
    """The first TOKEN_PREFIX characters of a run token, as history shows it ('-' for none)."""
    return token[:TOKEN_PREFIX] if isinstance(token, str) else "-"


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


@dataclass(frozen=True)
class Job:
    """One job, its kind's steps, the rules of its steps, and the database's now when it was read.

    Built from a `job_row` row with :meth:`from_row`; the completion verdict is
    computed once, when the job is built.
    """

    id: int
    job_name: str
    tenant_id: int
    tenant_name: str | None
    tenant_tier: str | None  # names its queues: <kind>_queue_<tier>
    integration_id: int | None
    provider: str | None
    kind: str | None
    kind_steps: tuple[rules.KindStep, ...] | None  # what a new run gets; None: the job's kind is unknown
    rules: dict[str, str]  # step name -> rule (etlctl.step_rules) for the steps of its document and kind
    status: object  # the status document as stored: usually a dict, but anything another program wrote
    steps_digest: str | None  # md5 of the steps, computed by PostgreSQL: what a reset is guarded on
    next_run: datetime | None
    schedule_interval_minutes: int | None
    retry_interval_minutes: int | None
    retry_count: int | None
    last_sync_date: datetime | None
    last_run_started_at: datetime | None
    last_run_finished_at: datetime | None
    last_updated_at: datetime | None
    error_message: str | None
    active: bool | None
    integration_active: bool | None
    tenant_active: bool | None
    last_audit_at: datetime | None  # etlctl's latest write to the job (its audit)
    last_audit_command: str | None  # ... and the command that made it
    now: datetime
    # What a look at the broker's queues found (etlctl.actions.peeking): a reason per queue where a
    # message of the run waits. Never read from the row; dataclasses.replace() adds it and judges again.
    queued: tuple[str, ...] = ()
    completion: rules.Completion = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "completion", rules.evaluate(self.rules, self.status, self.kind_steps, self.queued))

    @classmethod
    def from_row(cls, row: Mapping) -> Job:
        built = ("rules", "kind_steps", "queued")
        values = {f.name: row.get(f.name) for f in fields(cls) if f.init and f.name not in built}
        return cls(rules=rules.step_rules_from(row.get("step_rules")),
                   kind_steps=rules.kind_steps_from_rows(row.get("kind_steps")), **values)

    @property
    def overall(self) -> object:
        """The overall state; RATE_LIMITED (the existing workers' spelling) reads as RATE_LIMIT_REACHED."""
        return rules.normal_overall(self.status.get("overall")) if isinstance(self.status, dict) else None

    @property
    def token(self) -> object:
        return self.status.get("token") if isinstance(self.status, dict) else None

    @property
    def finished_at(self) -> datetime | None:
        return self.last_run_finished_at

    def label(self) -> str:
        return f"job {self.id} ({self.job_name}, tenant {self.tenant_name or self.tenant_id})"
