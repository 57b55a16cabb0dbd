"""A job as etlctl reads it (one row of the `job_row` query), and what a user
types to name one. Pure values: no database here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime

from etlctl.core import document, lifecycle, rules
from etlctl.errors import UsageError


# A run token may be given by its first TOKEN_PREFIX characters or more, as long as no
# other run of the job starts the same way (the write checks that); history shows that much.
TOKEN_PREFIX = 8


def short_token(token: object) -> str:
    """The first TOKEN_PREFIX characters of a run token, as history shows it ('-' for none)."""
    return token[:TOKEN_PREFIX] if isinstance(token, str) else "-"


MAX_JOB_ID = 2**31 - 1  # etl_jobs.id is a PostgreSQL integer


def is_job_id(text: str) -> bool:
    """Whether JOB is written as an id: the digits 0-9 only. Python's str.isdigit() also accepts '³' and
    '①' (and int() reads '７' as 7): those are not ids, and not taken silently for one."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class JobRef:
    """What the user typed: JOB (an id or a name) and maybe --tenant."""

    text: str
    tenant: str | None = None

    @property
    def job_id(self) -> int | None:
        """The id, when JOB is one and no --tenant asks for a name lookup."""
        return int(self.text) if is_job_id(self.text) and self.tenant is None else None

    def __str__(self) -> str:
        shown = self.text if is_job_id(self.text) else repr(self.text)
        return shown if self.tenant is None else f"{shown} in tenant {self.tenant!r}"


def parse_ref(text: str, tenant: str | None = None) -> JobRef:
    text = (text or "").strip()
    if not text:
        raise UsageError(message="JOB must be a job id or a job name")
    if not is_job_id(text) and text.isnumeric():
        raise UsageError(message=f"invalid JOB {text!r}: a job id is written with the digits 0-9")
    if is_job_id(text) and int(text) > MAX_JOB_ID:
        raise UsageError(message=f"job id {text} is out of range (at most {MAX_JOB_ID})")
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
    status: object  # the status document as read: usually a dict, but anything another program wrote
    steps_digest: str | None  # md5 of the steps, computed by PostgreSQL: what a reset is guarded on
    status_digest: str | None  # md5 of the whole document: what a forced reset of an odd document is guarded on
    unread: tuple[document.Part, ...]  # the parts of the document etlctl did not read (marked Unreadable in status)
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
    retry_at: datetime | None = None  # FAILED: when schedule-next retries it (the due rule); else None
    # What a look at the broker's queues found (etlctl.actions.peeking): a reason per queue where a
    # message of the run waits. Never read from the row; dataclasses.replace() adds it and judges again.
    queued: tuple[str, ...] = ()
    completion: rules.Completion = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "completion", rules.evaluate(self.rules, self.status, self.kind_steps, self.queued))

    @classmethod
    def from_row(cls, row: Mapping) -> Job:
        built = ("rules", "kind_steps", "status", "unread", "queued")
        values = {f.name: row.get(f.name) for f in fields(cls) if f.init and f.name not in built}
        unread = document.parts_from(row.get("unread"))
        return cls(rules=rules.step_rules_from(row.get("step_rules")),
                   kind_steps=rules.kind_steps_from_rows(row.get("kind_steps")),
                   status=document.place(row.get("status"), unread), unread=unread, **values)

    @property
    def reset(self) -> lifecycle.ResetState:
        """Where its reset flow stands, its reset keys checked (a value out of bounds is a problem)."""
        return lifecycle.reset_state(self.status, self.now)

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
