"""Failover: a real primary and a streaming standby (tests/cluster.py), no mock,
no proxy pretending to be a server.

- under load (tests/failover_load.py), synchronous: the primary stopped with
  ``-m immediate`` in the middle of the work, the standby promoted; nothing
  acknowledged lost, no run started twice, the audit equals the transitions,
  every job progresses, wait-and-reset and watch carry on on the new primary;
- under the same load, asynchronous: what is lost is counted (and it is not
  nothing), after doctor warned;
- one cluster, no load: a write that lands on a standby is refused; reads work
  there; PGHOST=a,b; the deadline on a commit that waits for a standby that is
  gone, and on a frozen primary; a reset whose answer was lost; relay --follow;
- without servers: doctor's judgment of the replication facts, the cron block,
  the TCP keepalives every session asks for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from psycopg.types.json import Jsonb

from tests.cluster import Cluster
from tests.failover_load import ENV, HANG, PHASES, RUNNING, STEPS, etlctl, run_failovers, summary


# --- the tests ------------------------------------------------------------------------------------


def assert_invariants(figures: dict) -> None:
    assert figures["unexpected"] == []
    assert figures["started_twice"] == {}
    assert figures["unaudited"] == {} and figures["audit_without_change"] == {}
    assert figures["stuck"] == [set()] * len(figures["stuck"]), (
        f"jobs with no change of state after the failover: {figures['stuck_detail']}")
    assert figures["acknowledged"] > 0 and figures["runs_started"] > 0


def assert_spanning(figures: dict, new_socket: str | None = None) -> None:
    code, _, err, state, resets = figures["spanning"]
    assert code == 0, err
    assert "etlctl: lost the database (" in err and "; reconnecting with backoff" in err
    assert "etlctl: reconnected to the database at " in err
    assert (state, resets) == ("READY", 1)


def assert_watch_followed(figures: dict, job: str = "Wex AD") -> None:
    code, out, err = figures["watch"]
    assert code == 143, err
    assert "etlctl: connection lost (" in err and "etlctl: reconnected; " in err
    # The spanning wait-and-reset's reset happened on the new primary only, after the reconnection.
    assert any("FINISHED → READY" in line and job in line for line in out.splitlines()), out


def test_synchronous_failover_under_load_loses_nothing_acknowledged(capsys):
    figures = run_failovers(synchronous=True)
    with capsys.disabled():
        print(f"\nfailover (synchronous): {summary(figures)}")
    assert figures["lost"] == []
    assert_invariants(figures)
    assert_spanning(figures)
    assert_watch_followed(figures)
    assert "Asynchronous replication" not in figures["doctor_before"][1]


def test_async_loses_acknowledged_writes(capsys):
    figures = run_failovers(synchronous=False)
    with capsys.disabled():
        print(f"\nfailover (asynchronous): {summary(figures)}; lost: {figures['lost']}; jobs now: {figures['states']}")
    code, said = figures["doctor_before"]
    assert code == 3 and "Asynchronous replication" in said
    assert "acknowledged writes can be lost on failover" in said
    # Measured: the writes acknowledged while the primary alone had them (its replication cut) are gone.
    assert isinstance(figures["lost"], list) and figures["acknowledged"] > 0
    assert len(figures["lost"]) > 0, "asynchronous replication lost nothing: the harness measured no loss"
    assert figures["started_twice"] == {}
    assert figures["unaudited"] == {} and figures["audit_without_change"] == {}
    assert_spanning(figures)


# --- one cluster, no load: read-only refusal, the deadline, doctor after a failover ------------------


@pytest.fixture
def cluster():
    """A synchronous cluster with etlctl's schema and one RUNNING job (id 1)."""
    built = Cluster(synchronous=True)
    try:
        built.start()
        built.primary.sql("CREATE DATABASE etl")
        code, _, err = etlctl(["db", "init"], built.dsn("etl"))
        assert code == 0, err
        built.primary.sql("INSERT INTO tenants (name) VALUES ('acme')", dbname="etl")
        built.primary.sql("INSERT INTO etl_jobs (job_name, tenant_id, status) VALUES ('GitHub', 1, %s)", dbname="etl",
                          params=(Jsonb(RUNNING),))
        built.wait_streaming()
        yield built
    finally:
        built.stop()


def job_status(node, job: int = 1) -> dict:
    return node.sql("SELECT status FROM etl_jobs WHERE id = %s", dbname="etl", params=(job,))[0][0]


def audit_rows(node) -> int:
    return node.sql("SELECT count(*) FROM etlctl.audit", dbname="etl")[0][0]


def read_only_line(node) -> str:
    return (f"etlctl: the database server {node.sockets}:{node.port} is read-only (a standby, or "
            "default_transaction_read_only is on): nothing was written; point --dsn at the primary, or list every "
            "host with target_session_attrs=read-write\n")


def test_a_write_that_lands_on_a_standby_is_refused_and_writes_nothing(cluster):
    standby_first = cluster.dsn("etl", read_write=False, standby_first=True)
    step = ["step", 1, STEPS[0], "extraction", "finished", "--token", "tok-run-0001"]
    assert etlctl(step, standby_first) == (6, "", read_only_line(cluster.standby))
    # wait-and-reset refuses at once too, before any wait (its first write would come after one).
    cluster.primary.sql("UPDATE etl_jobs SET status = status || '{\"overall\": \"FINISHED\"}' WHERE id = 1",
                        dbname="etl")
    cluster.wait_streaming()
    assert etlctl(["wait-and-reset", 1, "--delay", "1h"], standby_first) == (6, "", read_only_line(cluster.standby))
    assert etlctl(["schedule-next"], cluster.standby.conninfo("etl")) == (6, "", read_only_line(cluster.standby))
    # watch only reads, but LISTEN is refused on a standby (it would never hear a change there).
    assert etlctl(["watch"], cluster.standby.conninfo("etl")) == (6, "", read_only_line(cluster.standby))
    assert job_status(cluster.primary)["steps"][STEPS[0]]["extraction"] == "idle"
    assert audit_rows(cluster.primary) == 0
    # The same write with every host and target_session_attrs=read-write lands on the primary.
    read_write = cluster.dsn("etl", standby_first=True)
    cluster.primary.sql("UPDATE etl_jobs SET status = status || '{\"overall\": \"RUNNING\"}' WHERE id = 1",
                        dbname="etl")
    code, out, err = etlctl(step, read_write)
    assert (code, err) == (0, ""), err
    assert job_status(cluster.primary)["steps"][STEPS[0]]["extraction"] == "finished"


def test_libpq_variables_name_every_host(cluster):
    """PGHOST=a,b (no DSN): the write lands on the primary whichever host is listed first."""
    b, a = cluster.standby, cluster.primary
    env = {"PGHOST": f"{b.sockets},{a.sockets}", "PGPORT": f"{b.port},{a.port}", "PGUSER": "postgres",
           "PGDATABASE": "etl", "PGTARGETSESSIONATTRS": "read-write"}
    step = ["step", 1, STEPS[0], "transform", "finished", "--token", "tok-run-0001"]
    assert etlctl(step, None, env)[0] == 0
    assert job_status(a)["steps"][STEPS[0]]["transform"] == "finished"
    env.pop("PGTARGETSESSIONATTRS")
    step[4] = "running"
    assert etlctl(step, None, env) == (6, "", read_only_line(b))


def test_reading_commands_work_on_a_standby(cluster):
    """status reads as of what the standby replayed; doctor says it is a standby (a note)."""
    standby = cluster.standby.conninfo("etl")
    code, out, err = etlctl(["status", 1], standby)
    assert (code, err) == (0, "") and "RUNNING" in out
    code, out, err = etlctl(["doctor"], standby)
    assert "Connected to a standby" in out and "this server is a standby, in recovery" in out, out + err


def test_a_commit_waiting_for_a_standby_that_is_gone_gives_up_at_the_deadline(cluster):
    """After a failover the new primary still names its lost synchronous standby: every commit waits
    for it. The server's statement_timeout does not end that wait; etlctl's deadline (statement plus
    connect timeout) does: exit 6, never a hang. doctor says why, and its fix ends the wait."""
    cluster.kill_primary()
    cluster.promote()
    new = cluster.primary
    new.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{cluster.standby.name}'")
    new.sql("SELECT pg_reload_conf()")
    dsn = cluster.dsn("etl")
    code, out, err = etlctl(["doctor"], dsn)
    assert code == 3 and "Synchronous standby missing" in out, out + err
    assert f"synchronous_standby_names is '{cluster.standby.name}' but no standby confirms commits" in out
    step = ["--statement-timeout", "1s", "--connect-timeout", "2s", "step", 1, STEPS[1], "embedding", "running",
            "--token", "tok-run-0001"]
    code, out, err = etlctl(step, dsn)
    assert (code, out) == (6, "")
    assert err.startswith(f"etlctl: cannot reach the database ({new.sockets}:{new.port}): no answer for 3s "
                          "(--statement-timeout plus --connect-timeout): the server is frozen, or a commit waits for "
                          "a synchronous standby that is gone; etlctl closed the connection"), err
    # doctor's fix, as a superuser on the new primary: the waiting ends, writes work.
    new.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
    new.sql("SELECT pg_reload_conf()")
    step[-3] = "finished"
    assert etlctl(step, dsn)[0] == 0
    assert etlctl(["doctor"], dsn)[1].count("Synchronous standby missing") == 0


def test_a_frozen_primary_is_given_up_after_the_connect_timeout(cluster):
    """A primary that accepts connections and never answers (SIGSTOP): each host gets --connect-timeout,
    then exit 6 naming each host and why."""
    pids = cluster.freeze_primary()
    try:
        code, out, err = etlctl(["--connect-timeout", "2s", "status", 1], cluster.dsn("etl"))
    finally:
        cluster.thaw(pids)
    a, b = cluster.primary, cluster.standby
    assert (code, out) == (6, "")
    assert err == (f"etlctl: cannot reach the database (postgres@{a.sockets}:{a.port},{b.sockets}:{b.port}/etl): "
                   f"no host accepted the connection: {a.sockets}:{a.port} (connection timeout expired); "
                   f"{b.sockets}:{b.port} (session is read-only)\n")


# --- doctor's judgment, without servers --------------------------------------------------------------

from etlctl.oncall.doctor_replication import replication_findings  # noqa: E402


def facts(commit="on", names="", standbys=(), in_recovery=False) -> dict:
    return {"in_recovery": in_recovery, "synchronous_commit": commit, "synchronous_standby_names": names,
            "standbys": [{"name": n, "state": "streaming", "sync_state": s} for n, s in standbys],
            "replay_age": 1.5 if in_recovery else None, "grant_monitor": "GRANT pg_monitor TO etl"}


@pytest.mark.parametrize("given, found", [
    (facts(), []),  # no standby, none expected: nothing to say
    (facts(standbys=[("b", "async")]), [("replication_async", "problem")]),
    (facts(commit="local", names="b", standbys=[("b", "sync")]), [("replication_async", "problem")]),
    (facts(commit="off", names="b", standbys=[("b", "sync")]), [("replication_async", "problem")]),
    (facts(commit="remote_apply", names="b", standbys=[("b", "sync")]), []),
    (facts(commit="on", names="ANY 1 (b, c)", standbys=[("b", "quorum"), ("c", "quorum")]), []),
    (facts(commit="remote_write", names="b", standbys=[("b", "sync")]), [("replication_remote_write", "note")]),
    (facts(names="b"), [("replication_standby_missing", "problem")]),
    (facts(names="b", standbys=[("c", "async")]), [("replication_standby_missing", "problem")]),
    (facts(commit="local", names="b"), []),  # commits do not wait for the missing standby
    (facts(standbys=[("b", None)]), [("replication_hidden", "note")]),
    (facts(names="b", standbys=[("b", None)]), [("replication_hidden", "note")]),
    (facts(in_recovery=True), [("standby_server", "note")]),
])
def test_doctor_judges_the_replication_mode(given, found):
    assert [(f.code, f.severity) for f in replication_findings(given)] == found


def test_a_standby_s_fix_is_a_template_no_script_runs():
    from etlctl.views.doctor import finding_record

    (standby,) = replication_findings(facts(in_recovery=True))
    assert finding_record(standby)["fix"] == [
        {"command": "", "template": "etlctl --dsn 'host=PRIMARY,STANDBY target_session_attrs=read-write' doctor",
         "note": "every host, and libpq picks the one that accepts writes"}]


# --- the cron block carries every host ---------------------------------------------------------------


def test_cron_carries_a_multi_host_dsn_without_its_password():
    code, out, err = etlctl(["cron"], "postgresql://etl:sekret@a:5432,b:5433/etl?target_session_attrs=read-write")
    assert code == 0 and "sekret" not in out + err
    dsn = "ETLCTL_DSN='host=a,b port=5432,5433 dbname=etl user=etl target_session_attrs=read-write'"
    assert out.count(dsn) == 2, out
    assert "# Several hosts: each tick connects to the one that accepts writes (target_session_attrs=read-write).\n" in out


def test_cron_carries_multi_host_libpq_variables_and_says_when_a_tick_may_reach_a_standby():
    env = {"PGHOST": "a,b", "PGPORT": "5432,5433", "PGDATABASE": "etl", "PGPASSWORD": "sekret"}
    code, out, err = etlctl(["cron"], None, env)
    assert code == 0 and "sekret" not in out + err
    assert out.count("PGHOST=a,b PGPORT=5432,5433 PGDATABASE=etl ") == 2, out
    assert ("# Several hosts, but a tick may reach a standby first and be refused (exit 6): set "
            "PGTARGETSESSIONATTRS=read-write.\n") in out
    code, out, _ = etlctl(["cron"], None, {**env, "PGTARGETSESSIONATTRS": "read-write"})
    assert out.count("PGHOST=a,b PGPORT=5432,5433 PGDATABASE=etl PGTARGETSESSIONATTRS=read-write ") == 2, out


# --- relay --follow lands on the new primary ---------------------------------------------------------


class _ClusterAsServer:
    """The tests' TestDatabase, through the multi-host DSN: it reaches whichever node accepts writes."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def dsn(self, dbname: str) -> str:
        return self.cluster.dsn(dbname)


def test_relay_follow_reconnects_to_the_new_primary(cluster, broker, queues):
    from tests.helpers import TestDatabase, etlctl_process, wait_until
    from tests.relay_helpers import fill_outbox, message_ids, published_ids, tenant_of_tier

    tier = queues.tier()
    queue = f"extraction_queue_{tier}"
    db = TestDatabase(_ClusterAsServer(cluster), "etl")
    tenant = tenant_of_tier(db, tier, "relayed")
    proc = etlctl_process(["relay", "--follow", "--poll", "0.5"], cluster.dsn("etl"), {"ETLCTL_AMQP_URL": broker.url})
    try:
        before = fill_outbox(db, tenant, queue, 2)
        assert wait_until(lambda: published_ids(db) == set(before), timeout=30)
        db.conn.close()
        cluster.wait_streaming()  # the marks of what was published are on the standby too (synchronous anyway)
        cluster.kill_primary()
        cluster.promote()
        db = TestDatabase(_ClusterAsServer(cluster), "etl")
        after = fill_outbox(db, tenant, queue, 3, first=3)
        assert wait_until(lambda: published_ids(db) == set(before + after), timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=HANG)
    lines = err.splitlines()
    assert lines[0].startswith("etlctl: lost the database (") and lines[0].endswith("); reconnecting with backoff")
    assert lines[1].startswith("etlctl: reconnected to the database after ")
    assert lines[-1] == "etlctl: terminated (SIGTERM); nothing half-written"
    assert message_ids(queues.drain(queue)) == before + after


def test_run_rides_out_a_failover_and_acts_on_the_new_primary(cluster):
    """`etlctl run` stays up through the primary's death and the promotion: it says so once, reconnects to
    whichever host now takes writes, and resets there a job that finished after the failover."""
    from tests.helpers import etlctl_process, wait_until

    env = {**ENV, "ETLCTL_DELAY": "0", "ETLCTL_COOLDOWN": "0"}
    proc = etlctl_process(["run", "--max-sleep", "1s"], cluster.dsn("etl"), env)
    try:
        assert wait_until(lambda: cluster.primary.sql("SELECT count(*) FROM etlctl.runners WHERE last_pass_at IS NOT "
                                                      "NULL", dbname="etl")[0][0] == 1, timeout=HANG)
        cluster.wait_streaming()
        cluster.kill_primary()
        cluster.promote()
        # A plain UPDATE, as the existing workers write: no NOTIFY, so run finds it at its next pass (max-sleep).
        done = {**RUNNING, "overall": "FINISHED", "steps": {s: dict.fromkeys(PHASES, "finished") for s in STEPS}}
        cluster.primary.sql("UPDATE etl_jobs SET status = %s, last_run_finished_at = now() WHERE id = 1",
                            dbname="etl", params=(Jsonb(done),))
        assert wait_until(lambda: job_status(cluster.primary)["overall"] == "READY", timeout=HANG), job_status(cluster.primary)
        # The pass that reset it goes on (schedule-next, its heartbeat) before run calls itself back: wait for
        # that heartbeat, so that the SIGTERM below does not cut the pass short.
        assert wait_until(lambda: cluster.primary.sql(
            "SELECT bool_or(r.last_pass_at > (SELECT max(a.at) FROM etlctl.audit a WHERE a.job_id = 1 AND "
            "a.to_state = 'READY')) FROM etlctl.runners r", dbname="etl")[0][0], timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 143, err
    said = [line.split(" ", 1)[1] for line in err.splitlines()]  # each line after its timestamp
    assert said[0].startswith("etlctl: run started on ") and said[-1] == "etlctl: terminated (SIGTERM); nothing half-written"
    assert said[1].startswith("etlctl: lost the database (") and said[1].endswith("); reconnecting with backoff"), err
    assert said[2].startswith("etlctl: reconnected to the database after "), err
    assert len(said) == 4, err  # the outage said once, however many attempts it took


# --- TCP keepalives: a host that vanished from the network is given up ---------------------------------


@pytest.mark.parametrize("dsn_sets, expected", [
    ("", {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3",
          "tcp_user_timeout": "30000"}),
    (" keepalives_idle=60 tcp_user_timeout=0", {"keepalives": "1", "keepalives_idle": "60", "keepalives_interval": "5",
                                                "keepalives_count": "3", "tcp_user_timeout": "0"}),
])
def test_each_session_asks_for_keepalives_unless_the_dsn_sets_them(db, dsn_sets, expected):
    from etlctl.store import connection
    from etlctl.store.settings import ConnectionSettings

    session = connection.open_session(ConnectionSettings(dsn=db.dsn + dsn_sets), "test")
    try:
        given = session.conn.info.get_parameters()
    finally:
        session.close()
    assert {name: given.get(name) for name in expected} == expected


# --- a reset whose answer was lost ------------------------------------------------------------------


def test_wait_and_reset_recognises_its_own_reset_whose_answer_was_lost(cluster):
    """The reset's commit waits for a synchronous standby that is gone; the deadline gives the connection
    up (its answer lost). Once the standby is no longer waited for, the commit stands: wait-and-reset,
    reconnected, finds the job READY and its own audit row, and says it reset the job (not someone else)."""
    primary = cluster.primary
    done = {"overall": "FINISHED", "token": "tok-run-0001", "steps": {s: dict.fromkeys(PHASES, "finished") for s in STEPS}}
    primary.sql("UPDATE etl_jobs SET status = %s, last_run_finished_at = now() - interval '1 hour' WHERE id = 1",
                dbname="etl", params=(Jsonb(done),))
    cluster.wait_streaming()
    # A statement may wait 3 s: the reconnected session's reset, blocked on the row its lost one holds, waits
    # that long for the test to stop the waiting.
    proc = cluster_process(cluster, ["--statement-timeout", "3s", "--connect-timeout", "2s",
                                     "wait-and-reset", 1, "--delay", "0", "--cooldown", "2"])
    try:
        assert wait_for(lambda: job_status(primary).get("reset_stage") == "cooldown", proc)
        cluster.standby.stop("immediate")  # the reset's commit, at the end of the cooldown, waits for it
        # The waiting reset, and the reconnected session beside it.
        assert wait_for(lambda: primary.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'etlctl' "
                                            "AND wait_event = 'SyncRep'")[0][0] == 1, proc)
        assert wait_for(lambda: primary.sql("SELECT count(*) FROM pg_stat_activity "
                                            "WHERE application_name = 'etlctl'")[0][0] == 2, proc)
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = ''")
        primary.sql("SELECT pg_reload_conf()")
        out, err = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.startswith("reset job 1 (GitHub, tenant acme) to READY; next run at "), out
    assert "etlctl: lost the database (no answer for 5s (--statement-timeout plus --connect-timeout)" in err
    assert "etlctl: reconnected to the database at " in err
    assert primary.sql("SELECT count(*) FROM etlctl.audit WHERE to_state = 'READY'", dbname="etl")[0][0] == 1


def cluster_process(cluster: Cluster, args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    env["ETLCTL_DSN"] = cluster.dsn("etl")
    return subprocess.Popen([sys.executable, "-m", "etlctl", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = HANG) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return False
