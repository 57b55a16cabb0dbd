"""doctor's judgment of replication, as far as etlctl's guarantees go. Pure: the
server's replication facts in (``replication_facts``), findings out.

etlctl promises that a write it acknowledged stands and that no run starts
twice. Across a failover that holds only when each commit waits for a standby
that will be promoted: a synchronous standby (synchronous_standby_names) and
synchronous_commit = on or remote_apply. Otherwise the last acknowledged commits
exist only on the primary that died (tests/test_failover.py measures it).

- problem: standbys stream from this server, but commits do not wait for any of
  them (no synchronous standby, or synchronous_commit local/off);
- problem: synchronous_standby_names is set, yet no standby confirms commits
  (after a failover the new primary has none): every write waits;
- note: synchronous_commit = remote_write (a failover loses nothing unless the
  standby's host fails too); this role cannot see the standbys' mode; this
  server is a standby (etlctl's writes are refused here);
- nothing at all when there is no standby and none is expected.
"""

from __future__ import annotations

from etlctl.core.humanize import duration
from etlctl.oncall.doctor_fixes import Fix, psql_each
from etlctl.oncall.doctor_report import NOTE, PROBLEM, Finding

CONFIRMING = ("sync", "quorum")  # sync_state of a standby whose confirmation a commit waits for
NOT_WAITING = ("off", "local")  # synchronous_commit values with which no commit waits for a standby


def replication_findings(facts: dict) -> list[Finding]:
    if facts["in_recovery"]:
        return [_standby_server(facts)]
    standbys = facts["standbys"] or []
    names = (facts["synchronous_standby_names"] or "").strip()
    commit = facts["synchronous_commit"]
    details = {"synchronous_commit": commit, "synchronous_standby_names": names, "standbys": standbys}
    confirming = [s for s in standbys if s.get("sync_state") in CONFIRMING]
    if names and not confirming and commit not in NOT_WAITING:
        if standbys and any(s.get("sync_state") is None for s in standbys):
            return [_hidden(standbys, facts["grant_monitor"], details)]
        return [_standby_missing(names, standbys, details)]
    if not standbys:
        return []
    if all(s.get("sync_state") is None for s in standbys):
        return [_hidden(standbys, facts["grant_monitor"], details)]
    if not confirming or commit in NOT_WAITING:
        return [_asynchronous(standbys, names, commit, details)]
    if commit == "remote_write":
        return [Finding(
            "replication_remote_write", NOTE,
            f"synchronous replication to {_listed(confirming)} with synchronous_commit = remote_write",
            "a commit is acknowledged once the standby has written it, before it is on its disk: a failover loses "
            "nothing unless the standby's host fails at the same moment; remote_apply (or on) closes that too",
            (Fix(psql_each("fix_remote_apply", "fix_reload_configuration"), "as a superuser, on the primary"),),
            details=details)]
    return []


def _asynchronous(standbys: list[dict], names: str, commit: str, details: dict) -> Finding:
    if commit in NOT_WAITING:
        cause = (f"synchronous_commit = {commit}: a commit is acknowledged before any standby has it, "
                 "even with a synchronous standby")
        fixes = (Fix(psql_each("fix_remote_apply", "fix_reload_configuration"),
                     "as a superuser, on the primary (and for any role or database that sets it otherwise)"),)
    else:
        cause = ("no standby is synchronous (synchronous_standby_names is "
                 f"{repr(names) if names else 'empty'}): a commit is acknowledged before any standby has it")
        fixes = (Fix(psql_each("fix_synchronous_standby", "fix_remote_apply", "fix_reload_configuration"),
                     "as a superuser, on the primary; costs a round trip to the standby per commit (RUNBOOK.md, "
                     "Failover)"),)
    return Finding(
        "replication_async", PROBLEM,
        f"asynchronous replication to {_listed(standbys)}: acknowledged writes can be lost on failover",
        f"{cause}. If the primary fails, the standby promoted in its place may lack the last commits etlctl "
        "reported as done: a worker's step, a reset, a run schedule-next started (whose message the workers may "
        "already have)", fixes, details=details)


def _standby_missing(names: str, standbys: list[dict], details: dict) -> Finding:
    streaming = f"; streaming now: {_listed(standbys)}, none of them named" if standbys else ""
    return Finding(
        "replication_standby_missing", PROBLEM,
        f"synchronous_standby_names is {names!r} but no standby confirms commits{streaming}: every write waits",
        "the synchronous standby is down, or this server was promoted and still names the standby it had; "
        "etlctl's writes give up after --statement-timeout plus --connect-timeout (exit 6), other writers wait",
        (Fix(psql_each("fix_no_synchronous_standby", "fix_reload_configuration"),
             "as a superuser, once you know that standby is gone (RUNBOOK.md, Failover); then rebuild one and "
             "set it back"),),
        details=details)


def _hidden(standbys: list[dict], grant: str, details: dict) -> Finding:
    count = len(standbys)
    return Finding(
        "replication_hidden", NOTE,
        f"{count} standby{'s' if count != 1 else ''} stream{'' if count != 1 else 's'} from this server; this role "
        "cannot see whether commits wait for them",
        "pg_stat_replication shows sync_state only to members of pg_read_all_stats (or pg_monitor)",
        (Fix(("psql", "-c", grant), "as a superuser: the role doctor runs as may then read it"),),
        details=details)


def _standby_server(facts: dict) -> Finding:
    age = facts.get("replay_age")
    replayed = f"; its last replayed transaction committed {duration(age)} ago" if age is not None else ""
    return Finding(
        "standby_server", NOTE, f"this server is a standby, in recovery{replayed}",
        "a DSN that reaches a standby reads (status, why, doctor: as of what it replayed) but cannot write: "
        "etlctl's writes exit 6 here",
        (Fix(("etlctl", "--dsn", "host=PRIMARY,STANDBY target_session_attrs=read-write", "doctor"),
             "every host, and libpq picks the one that accepts writes", template=True),),
        details={"replay_age_seconds": age})


def _listed(standbys: list[dict]) -> str:
    return ", ".join(f"{s.get('name') or '?'} ({s.get('sync_state') or 'mode hidden'})" for s in standbys)
