"""What doctor reports: findings (each a problem or a note, with its cause and
fixes) and the report that holds them. Printing them is :mod:`etlctl.views.doctor`'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from etlctl.oncall.doctor_fixes import Fix

PROBLEM = "problem"
NOTE = "note"

TITLES = {
    "schema_not_initialised": "Schema not initialised",
    "migrations_pending": "Migrations pending",
    "index_missing": "Partial index missing",
    "clock_skew": "Clock skew",
    "run_not_seen": "`etlctl run` not seen",
    "replication_standby_missing": "Synchronous standby missing",
    "replication_async": "Asynchronous replication",
    "replication_remote_write": "Synchronous replication, remote_write",
    "replication_hidden": "Replication mode hidden",
    "standby_server": "Connected to a standby",
    "no_jobs": "No jobs",
    "multiple_running": "Multiple jobs running",
    "stuck_finished": "Stuck on FINISHED",
    "timer_retrying": "Timer keeps retrying",
    "not_starting": "Next job not starting",
    "long_running": "Running far longer than usual",
    "queue_stale": "Queue messages pending too long",
    "broker_unreachable": "Message broker unreachable",
    "queue_missing": "Broker queue missing",
    "queue_no_consumer": "No worker consumes a queue",
    "malformed_status": "Malformed status document",
}
ORDER = list(TITLES)


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    summary: str
    cause: str
    fixes: tuple[Fix, ...]
    job_ids: tuple[int, ...] = ()
    details: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        return TITLES[self.code]


@dataclass
class Report:
    now: datetime | None = None
    findings: list[Finding] = field(default_factory=list)
    jobs_checked: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return sum(1 for f in self.findings if f.severity == PROBLEM)

    @property
    def notes(self) -> int:
        return sum(1 for f in self.findings if f.severity == NOTE)

    @property
    def healthy(self) -> bool:
        return self.problems == 0
