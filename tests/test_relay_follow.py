"""`etlctl relay --follow` as a real process: woken by NOTIFY, through a broker restart, with
heartbeats kept while idle, and stopped by SIGINT or SIGTERM with nothing half-marked."""

from __future__ import annotations

import signal
import time

import pytest

from tests.helpers import Cli, etlctl_process, wait_until
from tests.relay_helpers import fill_outbox, message_ids, published_ids, start_jira_jobs, tenant_of_tier


@pytest.fixture
def tier(queues):
    return queues.tier()


@pytest.fixture
def tenant(db, tier):
    return tenant_of_tier(db, tier)


def follow(db, broker, *args: str):
    return etlctl_process(["relay", "--follow", *args], db.dsn, {"ETLCTL_AMQP_URL": broker.url})


def stop(proc, signum=signal.SIGTERM) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signum)
    return proc.communicate(timeout=30)


def test_follow_is_woken_by_the_transaction_that_queues(db, cli, broker, queues, tier, tenant):
    queue = f"extraction_queue_{tier}"
    proc = follow(db, broker, "--poll", "60")  # no poll within the test: only a NOTIFY can wake it
    try:
        [first] = start_jira_jobs(db, cli, tenant)
        assert wait_until(lambda: published_ids(db) == {first["queue_id"]}, timeout=30)
        time.sleep(0.5)  # now idle, waiting
        db.job("Jira later", tenant, db.integration(tenant))
        [second] = cli("schedule-next", "--json").json()["started"]
        assert wait_until(lambda: published_ids(db) == {first["queue_id"], second["queue_id"]}, timeout=30)
    finally:
        out, err = stop(proc)
    assert (proc.returncode, err) == (143, "etlctl: terminated (SIGTERM); nothing half-written\n")
    assert out.splitlines() == [
        f"published message {r['queue_id']} (job {r['job_id']} jira_projects_and_issue_types extraction, "
        f"run {r['token']}) to {queue}" for r in (first, second)]
    assert message_ids(queues.drain(queue)) == [first["queue_id"], second["queue_id"]]


def test_sigint_stops_it_with_130(db, broker, tenant):
    proc = follow(db, broker)
    time.sleep(1.5)
    out, err = stop(proc, signal.SIGINT)
    assert (proc.returncode, out, err) == (130, "", "etlctl: interrupted (SIGINT); nothing half-written\n")


def test_a_broker_restart_in_the_middle_loses_nothing(db, broker, node_control, queues, tier, tenant):
    queue = f"extraction_queue_{tier}"
    proc = follow(db, broker, "--poll", "0.5", "--batch", "20")
    try:
        before = fill_outbox(db, tenant, queue, 100)
        assert wait_until(lambda: published_ids(db) >= set(before), timeout=30)
        node_control.stop_app()  # every client is disconnected; the node's queues stay on disk
        try:
            during = fill_outbox(db, tenant, queue, 100, first=101)
            time.sleep(4)  # several reconnection attempts: said once, not once per attempt
            assert not published_ids(db) & set(during)
        finally:
            node_control.start_app()
        queues.reconnect()
        assert wait_until(lambda: published_ids(db) >= set(during), timeout=60)
    finally:
        out, err = stop(proc)
    assert proc.returncode == 143, err
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith("etlctl: lost the message broker (") and lines[0].endswith("); reconnecting with backoff")
    assert lines[1].startswith("etlctl: reconnected to the message broker after ")
    assert lines[2] == "etlctl: terminated (SIGTERM); nothing half-written"
    received = message_ids(queues.drain(queue))
    assert set(received) == set(before) | set(during)  # nothing lost
    assert len(received) == len(before) + len(during)  # and, with no crash, nothing twice


def test_heartbeats_go_on_while_it_waits(db, cli, broker, queues, tier, tenant):
    """With 2 s heartbeats the broker drops a connection that stays silent for about 4 s: an idle
    follow that stopped servicing its connection would find it gone (and say so) at the next message."""
    queue = f"extraction_queue_{tier}"
    proc = etlctl_process(["relay", "--follow", "--poll", "60", "--amqp-heartbeat", "2"], db.dsn,
                          {"ETLCTL_AMQP_URL": broker.url})
    try:
        [first] = start_jira_jobs(db, cli, tenant)
        assert wait_until(lambda: published_ids(db) == {first["queue_id"]}, timeout=30)
        time.sleep(9)  # idle: only heartbeats cross the connection
        db.job("Jira later", tenant, db.integration(tenant))
        [second] = cli("schedule-next", "--json").json()["started"]
        assert wait_until(lambda: second["queue_id"] in published_ids(db), timeout=30)
    finally:
        out, err = stop(proc)
    assert err == "etlctl: terminated (SIGTERM); nothing half-written\n"  # never lost the broker
    assert message_ids(queues.drain(queue)) == [first["queue_id"], second["queue_id"]]


def test_a_database_outage_is_said_once_and_survived(db, broker, queues, tier, tenant):
    queue = f"extraction_queue_{tier}"
    proc = follow(db, broker, "--poll", "0.5")
    try:
        time.sleep(1.5)
        # Every session of the relay is cut, as a server restart would.
        for _ in range(8):
            db.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = 'etlctl' AND datname = current_database()")
            time.sleep(0.4)
        ids = fill_outbox(db, tenant, queue, 5)
        assert wait_until(lambda: published_ids(db) == set(ids), timeout=60)
    finally:
        out, err = stop(proc)
    lines = err.splitlines()
    assert lines[0].startswith("etlctl: lost the database (") and lines[0].endswith("); reconnecting with backoff")
    assert lines[1].startswith("etlctl: reconnected to the database after ")
    assert lines[-1] == "etlctl: terminated (SIGTERM); nothing half-written"
    assert message_ids(queues.drain(queue)) == ids


def test_follow_refuses_to_start_when_the_broker_never_worked(db, broker):
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": broker.url_for(password="nope")})("relay", "--follow")
    assert result.exit_code == 8
    assert "refused the login of user 'etlctl_test'" in result.stderr
    usage = Cli(db.dsn)("relay", "--follow", "--dry-run")
    assert (usage.exit_code, usage.stderr) == (2, "etlctl: --follow and --dry-run do not go together: --dry-run "
                                                  "shows one pass\n")
