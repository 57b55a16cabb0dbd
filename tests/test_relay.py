"""`etlctl relay` (one pass) against a real RabbitMQ: what a worker receives, what the outbox records,
and what happens when the broker refuses, returns, or cannot be reached."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

import pytest

from tests.helpers import NEW_YORK, Cli, wait_until
from tests.relay_helpers import (
    broker_cli,
    fill_outbox,
    message_ids,
    outbox,
    published_ids,
    start_jira_jobs,
    tenant_of_tier,
)

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tier(queues):
    return queues.tier()


@pytest.fixture
def tenant(db, tier):
    return tenant_of_tier(db, tier)


# --- the contract: what a worker receives ------------------------------------------------------


def test_a_worker_receives_exactly_the_contracts_first_messages(db, seeded, broker, queues, frozen):
    """existing-system-contract.md §1-§2, written out here, never computed by etlctl: a Jira run of acme
    (premium) and a GitHub run of globex (basic), each in its tenant's extraction queue."""
    premium, basic = queues.track("extraction_queue_premium"), queues.track("extraction_queue_basic")
    ny = Cli(db.dsn, env=NEW_YORK)
    started = {r["job_id"]: r for r in ny("schedule-next", "--json").json()["started"]}
    jira, github = seeded[("acme", "Jira")], seeded[("globex", "GitHub")]
    relayed = Cli(db.dsn, env={**NEW_YORK, "ETLCTL_AMQP_URL": broker.url})("relay")
    assert (relayed.exit_code, relayed.stderr) == (0, "")
    assert len(relayed.stdout.splitlines()) == 4  # every started job's message, one line each

    received = {**{int(r.properties.message_id): (premium, r) for r in queues.consume(premium, 2)},
                **{int(r.properties.message_id): (basic, r) for r in queues.consume(basic, 2)}}
    expected = {
        jira: (premium, {"tenant_id": db.value("SELECT tenant_id FROM etl_jobs WHERE id = %s", jira),
                         "integration_id": db.value("SELECT integration_id FROM etl_jobs WHERE id = %s", jira),
                         "job_id": jira, "type": "jira_projects_and_issue_types", "provider": "jira",
                         "token": db.status(jira)["token"], "old_last_sync_date": "2026-11-28 09:15:00"}),
        github: (basic, {"tenant_id": db.value("SELECT tenant_id FROM etl_jobs WHERE id = %s", github),
                         "integration_id": db.value("SELECT integration_id FROM etl_jobs WHERE id = %s", github),
                         "job_id": github, "type": "github_repositories", "provider": "github",
                         "first_item": True, "last_item": False,
                         "token": db.status(github)["token"], "old_last_sync_date": None}),
    }
    for job, (queue, message) in expected.items():
        outbox_id = started[job]["queue_id"]
        got_queue, got = received[outbox_id]
        assert (got_queue, got.routing_key, got.exchange, got.redelivered) == (queue, queue, "", False)
        # The very bytes the existing run-now path publishes: json.dumps of its dict, in its order.
        assert got.body == json.dumps(message).encode()
        p = got.properties
        assert (p.delivery_mode, p.content_type, p.message_id, p.app_id, p.timestamp) == (
            2, "application/json", str(outbox_id), "etlctl", int(NOW.timestamp()))
    assert queues.depth(premium) == 0 and queues.depth(basic) == 0
    assert queues.arguments_of(premium, broker)["arguments"] == {"x-message-ttl": 86400000}


# --- one pass --------------------------------------------------------------------------------


def test_a_pass_publishes_oldest_first_and_records_it(db, cli, broker, queues, tier, tenant):
    started = start_jira_jobs(db, cli, tenant, 3)
    queue = f"extraction_queue_{tier}"
    result = broker_cli(db, broker)("relay")
    ids = [r["queue_id"] for r in started]
    assert result.stdout == "".join(
        f"published message {r['queue_id']} (job {r['job_id']} jira_projects_and_issue_types extraction, "
        f"run {r['token']}) to {queue}\n" for r in started)
    assert (result.exit_code, result.stderr) == (0, "")
    assert message_ids(queues.drain(queue)) == ids
    rows = outbox(db)
    assert all(rows[i]["published_at"] is not None and rows[i]["attempts"] == 1 and rows[i]["last_error"] is None
               for i in ids)
    assert {rows[i]["published_by"].split(" on ")[0] for i in ids} == {"relay"}
    # Nothing pending: quiet, and nothing published twice.
    again = broker_cli(db, broker)("relay")
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", "")
    assert queues.depth(queue) == 0
    assert [m["state"] for m in cli("queue", "ls", "--json").json()] == ["published"] * 3


def test_a_stale_message_is_never_published_but_skipped_with_its_reason(db, cli, broker, queues, tier, tenant):
    [started] = start_jira_jobs(db, cli, tenant)
    job, old_token = started["job_id"], started["token"]
    assert cli("reset", job, "--force").exit_code == 0  # that run is over
    db.sql("UPDATE etl_jobs SET next_run = NULL WHERE id = %s", job)
    [restarted] = cli("schedule-next", "--json").json()["started"]
    result = broker_cli(db, broker)("relay", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert [(m["id"], m["reason"]) for m in report["skipped"]] == [
        (started["queue_id"], f"run {old_token} is over: job {job} is RUNNING in run {restarted['token']}")]
    assert [m["id"] for m in report["published"]] == [restarted["queue_id"]]
    assert message_ids(queues.drain(f"extraction_queue_{tier}")) == [restarted["queue_id"]]
    row = outbox(db)[started["queue_id"]]
    assert (row["published_at"], row["attempts"], row["skipped_at"] is not None) == (None, 0, True)
    # A skipped message stays skipped: no later pass publishes it, and nobody can claim it.
    assert broker_cli(db, broker)("relay").stdout == ""
    assert cli("queue", "claim", "--worker", "w").exit_code == 3


def test_a_message_of_a_deleted_job_is_skipped(db, cli, broker, queues, tier, tenant):
    [started] = start_jira_jobs(db, cli, tenant)
    db.sql("DELETE FROM etl_jobs WHERE id = %s", started["job_id"])
    result = broker_cli(db, broker)("relay")
    assert result.stdout == (f"skipped message {started['queue_id']} (job {started['job_id']} "
                             f"jira_projects_and_issue_types extraction, run {started['token']}): "
                             f"job {started['job_id']} no longer exists\n")
    assert queues.depth(f"extraction_queue_{tier}") is None  # never even declared


def test_a_nacked_message_stays_pending_and_goes_out_once_the_broker_takes_it(
        db, cli, broker, queues, node_control, tier, tenant):
    queue = queues.declare(f"extraction_queue_{tier}")
    [started] = start_jira_jobs(db, cli, tenant)
    node_control.set_policy(queue, f"^{queue}$", {"max-length": 0, "overflow": "reject-publish"})
    try:
        assert wait_until(lambda: node_control.policy_of(queue) == queue, every=0.2)
        refused = broker_cli(db, broker)("relay")
        assert refused.exit_code == 3
        assert refused.stdout == (f"not published: message {started['queue_id']} (job {started['job_id']} "
                                  f"jira_projects_and_issue_types extraction, run {started['token']}) to {queue}: "
                                  "nacked by the broker; still pending (attempt 1)\n")
        assert refused.stderr == ("etlctl: 1 message not confirmed by the message broker (1 nacked): pending still, "
                                  "retried by the next pass\n")
        row = outbox(db)[started["queue_id"]]
        assert (row["published_at"], row["attempts"], row["refusals"], row["last_error"]) == (
            None, 1, 1, "nacked by the broker")
        [listed] = cli("queue", "ls").stdout.splitlines()[2:]
        assert "pending (1 attempt; last: nacked by the broker)" in listed
    finally:
        node_control.clear_policy(queue)
    assert wait_until(lambda: node_control.policy_of(queue) is None, every=0.2)
    again = broker_cli(db, broker)("relay")
    assert again.exit_code == 0, again.stderr
    assert message_ids(queues.drain(queue)) == [started["queue_id"]]
    row = outbox(db)[started["queue_id"]]
    assert (row["published_at"] is not None, row["attempts"], row["refusals"], row["last_error"]) == (
        True, 2, 1, "nacked by the broker")  # the last error stays: it tells why the first attempt failed


def test_batches_follow_each_other_in_id_order(db, broker, queues, tier, tenant):
    queue = f"extraction_queue_{tier}"
    ids = fill_outbox(db, tenant, queue, 95)
    result = broker_cli(db, broker)("relay", "--batch", "10")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 95
    assert message_ids(queues.drain(queue)) == ids
    assert published_ids(db) == set(ids)


# --- the broker cannot be reached, or refuses ----------------------------------------------------


def test_broker_down_exits_8_and_marks_nothing(db, cli, tier, tenant):
    [started] = start_jira_jobs(db, cli, tenant)
    stale = fill_outbox(db, tenant, f"extraction_queue_{tier}", 1)  # a current run...
    db.sql("UPDATE etl_jobs SET status = status || '{\"token\": \"another-run\"}' WHERE job_name = 'Bulk'")  # ...now over
    before = outbox(db)
    port = free_port()
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": f"amqp://etl:Sekr1t@127.0.0.1:{port}/pulse_etl"})("relay")
    assert (result.exit_code, result.stdout) == (8, "")
    assert result.stderr == (f"etlctl: cannot reach the message broker (amqp://etl@127.0.0.1:{port}/pulse_etl): "
                             "connection refused\n")
    assert outbox(db) == before  # not even the stale message is marked skipped
    assert [outbox(db)[i]["skipped_at"] for i in stale] == [None]
    assert started["queue_id"] in outbox(db)


def test_only_stale_messages_need_no_broker_they_are_skipped_and_the_pass_exits_0(db, cli, tier, tenant):
    """Skipping asks nothing of the broker: a pass with nothing to publish never connects (README, relay)."""
    stale = fill_outbox(db, tenant, f"extraction_queue_{tier}", 1)
    db.sql("UPDATE etl_jobs SET status = status || '{\"token\": \"another-run\"}' WHERE job_name = 'Bulk'")
    port = free_port()
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": f"amqp://etl:Sekr1t@127.0.0.1:{port}/pulse_etl"})("relay")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.startswith(f"skipped message {stale[0]} ")
    assert outbox(db)[stale[0]]["skipped_at"] is not None


@pytest.mark.parametrize("what", ["password", "vhost"])
def test_wrong_credentials_or_vhost_say_which_and_never_show_the_password(db, cli, broker, tier, tenant, what):
    start_jira_jobs(db, cli, tenant)
    before = outbox(db)
    secret = "Wr0ng-Sekr1t-91"
    url = (broker.url_for(password=secret) if what == "password"
           else broker.url_for(vhost="pulse_etl_typo"))
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": url})("relay")
    assert (result.exit_code, result.stdout) == (8, "")
    expected = ("refused the login of user 'etlctl_test': wrong user name or password" if what == "password"
                else "refused the vhost 'pulse_etl_typo': it does not exist")
    assert result.stderr.startswith("etlctl: the message broker (amqp://etlctl_test@127.0.0.1:")
    assert result.stderr.endswith(f") {expected}\n")
    verbose = Cli(db.dsn, env={"ETLCTL_AMQP_URL": url})("relay", "-v")
    for text in (result.stderr, verbose.stderr, verbose.stdout):
        assert secret not in text and broker.password not in text
    assert outbox(db) == before
    assert secret not in json.dumps([r["details"] for r in db.audit()])


def test_no_broker_configured(db, cli, tenant):
    start_jira_jobs(db, cli, tenant)
    result = cli("relay")
    assert (result.exit_code, result.stdout) == (8, "")
    assert result.stderr == ("etlctl: no message broker configured: set ETLCTL_AMQP_URL (or --amqp-url, or the "
                             "existing system's RABBITMQ_HOST, RABBITMQ_USER, ... variables)\n")


def test_dry_run_shows_what_would_go_and_needs_no_broker(db, cli, tier, tenant):
    [started] = start_jira_jobs(db, cli, tenant)
    stale = fill_outbox(db, tenant, f"extraction_queue_{tier}", 1)
    db.sql("UPDATE etl_jobs SET status = status || '{\"token\": \"another-run\"}' WHERE job_name = 'Bulk'")
    before = outbox(db)
    result = cli("relay", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"would publish message {started['queue_id']} (job {started['job_id']} jira_projects_and_issue_types "
        f"extraction, run {started['token']}) to extraction_queue_{tier}\n"
        f"would skip message {stale[0]} (job {outbox(db)[stale[0]]['job_id']} step_1 extraction, run bulk-run): "
        f"run bulk-run is over: job {outbox(db)[stale[0]]['job_id']} is RUNNING in run another-run\n")
    assert outbox(db) == before
    as_json = cli("relay", "--dry-run", "--json").json()
    assert (as_json["dry_run"], [m["id"] for m in as_json["would_publish"]], [m["id"] for m in as_json["skipped"]]) == (
        True, [started["queue_id"]], stale)


# --- the outbox's other readers: queue claim and done -------------------------------------------


def test_a_claimed_message_is_not_relayed_and_a_relayed_one_cannot_be_claimed(db, cli, broker, queues, tier, tenant):
    first, second = start_jira_jobs(db, cli, tenant, 2)
    claimed = cli("queue", "claim", "--worker", "shell-1", "--json").json()
    assert claimed["id"] == first["queue_id"]
    assert broker_cli(db, broker)("relay").exit_code == 0
    assert message_ids(queues.drain(f"extraction_queue_{tier}")) == [second["queue_id"]]
    assert cli("queue", "claim", "--worker", "shell-2").exit_code == 3  # the other one was published
    # Done on a published message: done, and still published (never claimed).
    assert cli("queue", "done", second["queue_id"]).exit_code == 0
    states = {m["id"]: (m["state"], m["claimed_at"] is not None) for m in cli("queue", "ls", "--json").json()}
    assert states == {first["queue_id"]: ("claimed", True), second["queue_id"]: ("published", False)}
    # The database holds it, whatever a writer tries.
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation):
        db.sql("UPDATE etlctl.queue SET claimed_at = now() WHERE id = %s", second["queue_id"])


# --- schedule-next publishes its own ------------------------------------------------------------


def test_schedule_next_publishes_what_it_queued_right_after_its_commit(db, broker, queues, tier, tenant):
    cli = broker_cli(db, broker)
    db.job("Jira", tenant, db.integration(tenant))
    result = cli("schedule-next")
    assert (result.exit_code, result.stderr) == (0, "")
    started, published = result.stdout.splitlines()
    [row] = db.sql("SELECT id, token, job_id FROM etlctl.queue")
    assert started.startswith(f"started job {row['job_id']} (Jira): READY -> RUNNING, run {row['token']}")
    assert published == (f"published message {row['id']} (job {row['job_id']} jira_projects_and_issue_types "
                         f"extraction, run {row['token']}) to extraction_queue_{tier}")
    assert message_ids(queues.drain(f"extraction_queue_{tier}")) == [row["id"]]
    assert outbox(db)[row["id"]]["published_by"].startswith("schedule-next on ")
    assert cli("schedule-next", "--json").json()["messages"] == []  # nothing started: nothing to publish


def test_schedule_next_with_the_broker_down_keeps_its_starts_and_says_where_the_messages_wait(db, tier, tenant):
    job = db.job("Jira", tenant, db.integration(tenant))
    port = free_port()
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": f"amqp://etl@127.0.0.1:{port}/pulse_etl"})("schedule-next")
    assert result.exit_code == 8
    assert result.stdout.startswith(f"started job {job} (Jira): READY -> RUNNING")
    assert result.stderr == (f"etlctl: cannot reach the message broker (amqp://etl@127.0.0.1:{port}/pulse_etl): "
                             "connection refused; the message just queued waits in the outbox (etlctl.queue) for "
                             "`etlctl relay` to publish\n")
    assert db.status(job)["overall"] == "RUNNING"
    [row] = outbox(db).values()
    assert (row["published_at"], row["attempts"]) == (None, 0)


# --- a broker user with fewer permissions ------------------------------------------------------------


@pytest.fixture
def limited_user(node_control):
    """A user of the vhost who may write and read but not configure: it cannot declare queues."""
    node_control.ctl("add_user", "etl_limited", "limited-pw-83")
    node_control.ctl("set_permissions", "-p", "pulse_etl", "etl_limited", "^$", ".*", ".*")
    try:
        yield node_control.url_for(user="etl_limited", password="limited-pw-83")
    finally:
        node_control.ctl("delete_user", "etl_limited")


def test_a_user_who_may_not_declare_uses_the_queues_the_workers_declared(db, cli, node_control, queues, limited_user,
                                                                        tier, tenant):
    [started] = start_jira_jobs(db, cli, tenant)
    queue = f"extraction_queue_{tier}"
    relay = Cli(db.dsn, env={"ETLCTL_AMQP_URL": limited_user})
    missing = relay("relay")
    assert (missing.exit_code, missing.stdout) == (1, "")  # a permission, as a database role's: exit 1
    assert missing.stderr == (f"etlctl: message broker error: queue {queue!r} does not exist, and user 'etl_limited' "
                              "may not declare it (no configure permission on it): let the workers declare it, or "
                              "grant configure\n")
    assert outbox(db)[started["queue_id"]]["attempts"] == 0  # nothing marked
    queues.declare(queue)  # the workers' declare
    assert relay("relay").exit_code == 0
    assert message_ids(queues.drain(queue)) == [started["queue_id"]]


def test_a_user_who_may_not_write_leaves_the_message_pending_with_the_reason(db, cli, node_control, queues, tier,
                                                                            tenant, limited_user):
    node_control.ctl("set_permissions", "-p", "pulse_etl", "etl_limited", ".*", "^$", ".*")
    [started] = start_jira_jobs(db, cli, tenant)
    result = Cli(db.dsn, env={"ETLCTL_AMQP_URL": limited_user})("relay")
    refusal = ("the broker closed the publishing channel: ACCESS_REFUSED - access to exchange 'amq.default' in vhost "
               "'pulse_etl' refused for user 'etl_limited' (403)")
    assert (result.exit_code, result.stderr) == (1, f"etlctl: message broker error: {refusal}\n")
    row = outbox(db)[started["queue_id"]]
    assert (row["published_at"], row["attempts"], row["last_error"]) == (
        None, 1, f"not confirmed: message broker error: {refusal}")


def test_the_broker_flags_beat_the_environment(db, cli, broker, queues, tier, tenant):
    [started] = start_jira_jobs(db, cli, tenant)
    port = free_port()
    env = {"ETLCTL_AMQP_URL": broker.url}
    down = Cli(db.dsn, env=env)("relay", "--amqp-url", f"amqp://etl@127.0.0.1:{port}/pulse_etl",
                                "--amqp-connect-timeout", "2")
    assert (down.exit_code, down.stderr) == (
        8, f"etlctl: cannot reach the message broker (amqp://etl@127.0.0.1:{port}/pulse_etl): connection refused\n")
    empty = Cli(db.dsn, env=env)("relay", "--amqp-url", "")
    assert empty.exit_code == 2 and "--amqp-url" in empty.stderr and "must not be empty" in empty.stderr
    bad = Cli(db.dsn, env=env)("relay", "--amqp-heartbeat", "1.5")
    assert (bad.exit_code, bad.stderr) == (
        2, "etlctl: invalid --amqp-heartbeat '1.5': expected whole seconds from 0 (off) to 65535\n")
    assert Cli(db.dsn, env=env)("relay", "--amqp-heartbeat", "10").exit_code == 0
    assert message_ids(queues.drain(f"extraction_queue_{tier}")) == [started["queue_id"]]
