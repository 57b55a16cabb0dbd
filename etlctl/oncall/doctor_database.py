"""doctor's judgments about the database as a whole: clock skew, migrations
pending, the one-RUNNING index, queue messages left too long (never
published or claimed, or of runs that are over), and `etlctl run` processes
no longer seen. Pure: what
was read in, findings out (no database access)."""

from __future__ import annotations

from collections.abc import Sequence

from etlctl.core.humanize import duration, relative
from etlctl.oncall.doctor_fixes import Fix, psql
from etlctl.oncall.doctor_report import PROBLEM, Finding

SKEW_LIMIT = 5.0  # seconds
QUEUE_LIMIT = 900.0  # seconds a message may stay pending (or stale) before it is reported
INDEX_MIGRATION = "0002_one_running_per_integration"
RUN_MIGRATION = "0008_run_heartbeat"


def schema_finding(missing: Sequence[str]) -> Finding:
    return Finding(
        "schema_not_initialised", PROBLEM, f"the database has no {', '.join(missing)}",
        "etlctl's schema was never created here (or this is not the ETL database: check --dsn / ETLCTL_DSN)",
        (Fix(("etlctl", "db", "init"), "creates etlctl's schema; on the existing system's database it only adds etlctl's objects"),),
    )


def skew_finding(skew: float) -> Finding:
    side = "behind" if skew > 0 else "ahead of"
    return Finding(
        "clock_skew", PROBLEM,
        f"this host's clock is {_seconds(abs(skew))} {side} the database server's (limit {SKEW_LIMIT:.0f}s)",
        "etlctl decides with the database's clock, but cron on this host and the workers' timestamps follow their own "
        "clocks: deadlines and next_run drift apart",
        (Fix(("timedatectl", "status"), "on this host and on the database server: is NTP (chrony/ntpd) synchronised?"),),
        details={"skew_seconds": round(skew, 3)},
    )


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 60 else duration(value)


def _wait(value: float) -> str:
    """A --max-sleep as given: '30s', '1m', '2.5s'."""
    return f"{value:g}s" if value < 60 and value != int(value) else duration(value)


def pending_finding(pending: Sequence[str], conflicts: bool) -> Finding:
    fixes = [Fix(("etlctl", "db", "init"), "applies them; safe to run again")]
    if INDEX_MIGRATION in pending and conflicts:
        fixes = [Fix(("etlctl", "db", "init"), f"{INDEX_MIGRATION} is refused while an integration has more than one "
                                       "RUNNING job: fix 'Multiple jobs running' first")]
    return Finding(
        "migrations_pending", PROBLEM, f"{len(pending)} migration{'s' if len(pending) != 1 else ''} not applied: "
        f"{', '.join(pending)}",
        "`etlctl db init` was not run after an upgrade, or a migration was refused", tuple(fixes),
        details={"pending": list(pending)},
    )


def index_finding(index: dict, migration_pending: bool, conflicts: bool) -> Finding:
    what = "is missing" if not index["present"] else "is invalid (a failed build)"
    if migration_pending:
        fixes = (Fix(("etlctl", "db", "init"), "creates it" + (" once only one RUNNING job is left per integration"
                                                       if conflicts else "")),)
        cause = f"migration {INDEX_MIGRATION} is not applied"
    else:
        statements = (["fix_drop_running_index"] if index["present"] else []) + ["fix_create_running_index"]
        fixes = (Fix(psql(*statements),
                     f"SQL, as the schema's owner: {INDEX_MIGRATION} is recorded as applied, so db init will not "
                     "recreate it"),)
        cause = "it was dropped (or its build failed) after its migration was applied"
    return Finding(
        "index_missing", PROBLEM,
        f"the partial unique index etlctl_one_running_per_integration {what}: nothing stops a second RUNNING job "
        "on an integration", cause, fixes, details={"present": index["present"], "valid": index["valid"]},
    )


def queue_findings(rows: Sequence[dict]) -> list[Finding]:
    if not rows:
        return []
    now = rows[0]["now"]
    total = rows[0]["total"]
    stale = [r for r in rows if not (r["job_exists"] and r["current_run"])]
    unclaimed = [r for r in rows if r["job_exists"] and r["current_run"] and r["claimed_at"] is None]
    out = []
    if unclaimed:
        oldest = unclaimed[0]
        tried = [r for r in unclaimed if r["attempts"]]
        if tried:
            latest = max(tried, key=lambda r: r["last_attempt_at"])
            cause = (f"a relay tries, but the broker does not take them: message {latest['id']}'s last attempt "
                     f"({relative(latest['last_attempt_at'], now)}, attempt {latest['attempts']}) ended with: "
                     f"{latest['last_error']}")
        else:
            cause = ("nothing publishes them: no `etlctl relay` runs (from cron, or --follow as a service), and "
                     "schedule-next has no broker configured (ETLCTL_AMQP_URL or RABBITMQ_*); nor does a worker "
                     "claim them with `etlctl queue claim`")
        out.append(Finding(
            "queue_stale", PROBLEM,
            f"{len(unclaimed)} message{'s' if len(unclaimed) != 1 else ''} of current runs never published or "
            f"claimed; the oldest, {oldest['id']} (job {oldest['job_id']} {oldest['step']} {oldest['phase']}, to "
            f"{oldest['queue_name']}), was queued {relative(oldest['created_at'], now)}",
            cause,
            (Fix(("etlctl", "relay"), "publishes them (with the broker configured), or says why it cannot"),
             Fix(("etlctl", "queue", "ls", "--pending"), "the messages waiting, with their attempts and last error")),
            tuple(sorted({r["job_id"] for r in unclaimed})), details={"message_ids": [r["id"] for r in unclaimed]},
        ))
    if stale:
        shown = stale[:10]
        fixes = tuple(Fix(("etlctl", "queue", "done", r["id"]), f"job {r['job_id']} {r['step']} {r['phase']}, run {r['token']}")
                      for r in shown)
        more = f" (and {len(stale) - len(shown)} more)" if len(stale) > len(shown) else ""
        out.append(Finding(
            "queue_stale", PROBLEM,
            f"{len(stale)} message{'s' if len(stale) != 1 else ''} of runs that are over (or of deleted jobs) never "
            f"done{more}",
            "the run they belong to ended (reset, forced or restarted) before a worker finished them; "
            "a worker that takes one now works for nothing (`etlctl relay` marks such messages skipped, never "
            "publishing them; `queue done` does it by hand)",
            fixes, tuple(sorted({r["job_id"] for r in stale})), details={"message_ids": [r["id"] for r in stale]},
        ))
    if total > len(rows) and out:
        out[-1].details["more_not_listed"] = total - len(rows)
    return out


def run_findings(rows: Sequence[dict]) -> list[Finding]:
    """An `etlctl run` whose heartbeat is older than twice its --max-sleep (neither stopped on a signal
    nor replaced on its host: the query leaves those out), one finding each."""
    out = []
    for row in rows:
        seen = "never finished a pass since it started" if row["last_pass_at"] is None else "last finished a pass"
        out.append(Finding(
            "run_not_seen", PROBLEM,
            f"`etlctl run` on {row['host']} (pid {row['pid']}) {seen} {relative(row['seen_at'], row['now'])}; "
            f"it waits at most {_wait(row['max_sleep'])} between passes (reported after "
            f"{_wait(2 * row['max_sleep'])})",
            "it stopped without SIGTERM or SIGINT (killed, crashed, its host or container gone) and no run was started "
            "on that host since, or it is stuck or cannot reach the database: the deadlines it would act on wait for "
            "another run, or for cron's sweep and schedule-next",
            (Fix(("systemctl", "status", "etlctl-run"), f"on {row['host']}: is it running? `journalctl -u etlctl-run` "
                                                         "says why it stopped"),
             Fix(psql("fix_forget_run", id=row["id"]), "only when it will not come back (its host is gone): doctor "
                                                       "stops reporting it")),
            details={"run_id": row["id"], "host": row["host"], "pid": row["pid"], "started_at": row["started_at"],
                     "last_pass_at": row["last_pass_at"], "passes": row["passes"], "max_sleep": row["max_sleep"]},
        ))
    return out
