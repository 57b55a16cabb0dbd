"""doctor and `etlctl run`'s heartbeats (etlctl.runners): a run not seen for more than twice its
--max-sleep is a problem, with the fixes; nothing when no run was ever used, when a run stopped on a
signal, or when a run started later on the same host replaced it (systemd's restart after kill -9)."""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta, timezone

from tests.helpers import finished
from tests.test_run import run_until

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def runner(db, host: str, pid: int, started: float, last_pass: float | None, max_sleep: float = 30,
           stopped: float | None = None) -> int:
    return db.value("INSERT INTO etlctl.runners (host, pid, started_at, last_pass_at, passes, max_sleep, stopped_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id", host, pid, at(started),
                    None if last_pass is None else at(last_pass), 0 if last_pass is None else 5, max_sleep,
                    None if stopped is None else at(stopped))


def run_findings(cli) -> list[dict]:
    return [f for f in cli("doctor", "--json").json()["findings"] if f["code"] == "run_not_seen"]


def test_no_run_ever_used_says_nothing(db, cli, frozen, acme):
    db.job("Later", acme, db.integration(acme), next_run=(NOW + timedelta(hours=1)).replace(tzinfo=None))
    result = cli("doctor")
    assert (result.exit_code, result.stdout) == (0, "no problems found (1 job checked)\n")


def test_a_run_not_seen_for_twice_its_max_sleep_is_a_problem(db, cli, frozen, acme):
    db.job("Later", acme, db.integration(acme), next_run=(NOW + timedelta(hours=1)).replace(tzinfo=None))
    lost = runner(db, "etl-1", 4242, started=-7200, last_pass=-61)  # 61s > 2 x 30s
    runner(db, "etl-2", 17, started=-7200, last_pass=-59)  # alive: within 2 x 30s
    runner(db, "etl-3", 1, started=-300, last_pass=None, max_sleep=60)  # stuck in its first pass
    runner(db, "etl-4", 99, started=-7200, last_pass=-3600, stopped=-3600)  # stopped by SIGTERM: not reported
    runner(db, "etl-5", 1, started=-7200, last_pass=-3600)  # killed, then replaced on its host:
    runner(db, "etl-5", 2, started=-3590, last_pass=-1)  # not reported

    result = cli("doctor")
    assert result.exit_code == 3
    forget = shlex.quote(f"UPDATE etlctl.runners SET stopped_at = now() WHERE id = {lost} AND stopped_at IS NULL")
    assert result.stdout.split("\n\n")[1] == (
        "[problem] `etlctl run` not seen: `etlctl run` on etl-1 (pid 4242) last finished a pass 1m01s ago; it waits "
        "at most 30s between passes (reported after 1m)\n"
        "  cause: it stopped without SIGTERM or SIGINT (killed, crashed, its host or container gone) and no run was "
        "started on that host since, or it is stuck or cannot reach the database: the deadlines it would act on wait "
        "for another run, or for cron's sweep and schedule-next\n"
        "  fix:   systemctl status etlctl-run\n"
        "         # on etl-1: is it running? `journalctl -u etlctl-run` says why it stopped\n"
        f"         psql -c {forget}\n"
        "         # only when it will not come back (its host is gone): doctor stops reporting it"
    )
    found = run_findings(cli)
    assert [(f["details"]["host"], f["details"]["pid"]) for f in found] == [("etl-3", 1), ("etl-1", 4242)]
    assert found[0]["summary"].startswith("`etlctl run` on etl-3 (pid 1) never finished a pass since it started 5m ago")

    for finding in found:  # the psql fix is exact: run as given, the finding goes
        db.sql(shlex.split(finding["fix"][1]["command"])[2])
    assert run_findings(cli) == []
    assert cli("doctor").exit_code == 0


def test_a_run_stopped_by_sigterm_is_not_reported_but_a_silent_one_is(db, cli, frozen, acme):
    """Through a real (in-process) run: its heartbeat row, then its stop."""
    db.job("Jira", acme, db.integration(acme), status={**finished(), "reset_stage": "gave_up", "reset_token": "tok-1",
                                                       "reset_gave_up_at": at(0).isoformat()})
    run_until(frozen, db, 2, max_sleep=30.0)  # passes at 0, 30 and 60, then SIGTERM in its third wait
    beat = db.one("SELECT passes, last_pass_at, stopped_at FROM etlctl.runners")
    assert (beat["passes"], beat["last_pass_at"], beat["stopped_at"]) == (3, at(60), at(60))
    frozen.frozen.tick(3600)
    assert run_findings(cli) == []
    db.sql("UPDATE etlctl.runners SET stopped_at = NULL")  # as if killed with SIGKILL
    [finding] = run_findings(cli)
    assert finding["summary"].startswith("`etlctl run` on ")
    assert (finding["details"]["passes"], finding["details"]["max_sleep"]) == (3, 30)


def test_a_pending_migration_0008_skips_the_check(db, cli, frozen, acme):
    db.job("Later", acme, db.integration(acme), next_run=(NOW + timedelta(hours=1)).replace(tzinfo=None))
    db.sql("DROP TABLE etlctl.runners")
    db.sql("DELETE FROM etlctl.migrations WHERE name = '0008_run_heartbeat'")
    result = cli("doctor")
    assert result.exit_code == 3
    assert "skipped: `etlctl run` heartbeats: needs the pending migrations (`etlctl db init`)\n" in result.stdout
    assert cli("db", "init").exit_code == 0
    assert cli("doctor").exit_code == 0
