"""etlctl watch in a subprocess: it sees changes made by other commands, survives the server
killing its connection (and prints what it missed), and stops cleanly on SIGINT and SIGTERM."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers import JIRA5_STEPS, JIRA_STEPS, etlctl_process, running

TIMEOUT = 15.0


class Watch:
    """`etlctl watch` as a process, its stdout and stderr read line by line with a timeout."""

    def __init__(self, args, dsn):
        self.proc = etlctl_process(["watch", *args], dsn)
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.stderr_seen: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink.put(line.rstrip("\n"))

    def line(self, timeout: float = TIMEOUT) -> str:
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s; stderr so far: {self.stderr_seen}") from None

    def json(self) -> dict:
        return json.loads(self.line())

    def no_line(self, wait: float = 1.0) -> None:
        try:
            extra = self.out.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected output: {extra}")

    def stderr_until(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.err.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.stderr_seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not on stderr within {timeout}s: {self.stderr_seen}")

    def stop(self, sig) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def watches():
    started: list[Watch] = []

    def start(*args, dsn):
        watch = Watch(args, dsn)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.kill()


def idle(names=JIRA_STEPS) -> dict:
    return {name: {"extraction": "idle", "transform": "idle", "embedding": "idle"} for name in names}


def kill_watch_connections(db) -> int:
    """Terminate watch's two connections (the one that LISTENs and the one that reads, and polls)."""
    killed = db.sql("SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "
                    "WHERE application_name = 'etlctl' AND datname = current_database() AND pid <> pg_backend_pid()")
    return sum(1 for row in killed if row["ok"])


def test_watch_prints_each_change_made_by_other_commands(db, cli, watches):
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, db.integration(tenant))
    other = db.job("GitHub", tenant, db.integration(tenant, "GitHub"), next_run="2999-01-01 00:00:00")
    watch = watches("--json", dsn=db.dsn)
    assert watch.stderr_until("etlctl: watching every job on etl_job_status (Ctrl-C to stop)")
    watch.no_line(0.2)  # without JOBs it prints changes only

    assert cli("schedule-next").exit_code == 0
    assert watch.json() == {"job_id": job, "overall": "RUNNING", "steps": idle(JIRA5_STEPS), "resync": False}
    token = db.status(job)["token"]
    assert cli("step", job, JIRA_STEPS[0], "extraction", "running", "--token", token).exit_code == 0
    expected = idle(JIRA5_STEPS)
    expected[JIRA_STEPS[0]]["extraction"] = "running"
    assert watch.json() == {"job_id": job, "overall": "RUNNING", "steps": expected, "resync": False}
    assert cli("complete", job, "--token", token).exit_code == 0
    assert watch.json() == {"job_id": job, "overall": "FINISHED", "steps": expected, "resync": False}
    assert cli("reset", job, "--force").exit_code == 0
    assert watch.json() == {"job_id": job, "overall": "READY", "steps": idle(JIRA5_STEPS), "resync": False}
    assert other  # never changed, never printed
    watch.no_line(0.3)

    assert watch.stop(signal.SIGINT) == 130
    assert watch.stderr_until("interrupted (SIGINT)") == "etlctl: interrupted (SIGINT); nothing half-written"


def test_watch_survives_the_server_terminating_its_connection(db, cli, watches):
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, db.integration(tenant), status=running(value="idle", token="t1"))
    other = db.job("GitHub", tenant, db.integration(tenant, "GitHub"))
    watch = watches(job, "--json", dsn=db.dsn)
    assert watch.json() == {"job_id": job, "overall": "RUNNING", "steps": idle(), "resync": False}  # JOBs: state first
    watch.stderr_until(f"etlctl: watching job {job} on etl_job_status")

    # While watch is frozen, a worker writes the table directly (no NOTIFY), and the server drops
    # both of watch's connections: it learns of the write only when it reads again.
    watch.proc.send_signal(signal.SIGSTOP)
    try:
        db.sql("UPDATE etl_jobs SET status = jsonb_set(status, %s, '\"running\"') WHERE id = %s",
               ["steps", JIRA_STEPS[0], "extraction"], job)
        assert kill_watch_connections(db) == 2
    finally:
        watch.proc.send_signal(signal.SIGCONT)

    assert watch.stderr_until("connection lost").startswith("etlctl: connection lost (")
    assert watch.stderr_until("reconnected") == "etlctl: reconnected; 1 change while disconnected"
    missed = idle()
    missed[JIRA_STEPS[0]]["extraction"] = "running"
    assert watch.json() == {"job_id": job, "overall": "RUNNING", "steps": missed, "resync": True}

    # Listening again: the next change arrives as it happens; other jobs stay out.
    assert cli("complete", job, "--token", "t1").exit_code == 0
    assert watch.json() == {"job_id": job, "overall": "FINISHED", "steps": missed, "resync": False}
    assert cli("schedule-next").exit_code == 0  # starts `other`: not watched
    assert db.status(other)["overall"] == "RUNNING"
    watch.no_line(0.5)

    assert watch.stop(signal.SIGTERM) == 143


def test_watch_on_a_terminal_prints_table_rows(db, cli, watches):
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, status=running(token="t1"))
    watch = watches(job, dsn=db.dsn)
    assert watch.line().split() == ["TIME", "JOB", "NAME", "TENANT", "OVERALL", "CHANGE"]
    assert watch.line().split()[1:] == [str(job), "Jira", "acme", "RUNNING", "current", "state"]
    watch.stderr_until("watching job")
    assert cli("step", job, "jira_dev_status", "embedding", "running").exit_code == 0
    assert watch.line().split()[1:] == [str(job), "Jira", "acme", "RUNNING", "jira_dev_status.embedding",
                                        "finished", "→", "running"]
    assert cli("complete", job).exit_code == 0
    assert watch.line().split()[1:] == [str(job), "Jira", "acme", "FINISHED", "RUNNING", "→", "FINISHED"]
    assert watch.stop(signal.SIGINT) == 130


def test_watch_of_an_unknown_job_exits_5(db, watches):
    watch = watches("404", dsn=db.dsn)
    assert watch.proc.wait(timeout=TIMEOUT) == 5
    assert watch.stderr_until("no job") == "etlctl: no job 404"


def test_a_deleted_job_is_reported(db, watches):
    job = db.job("Jira", status=running())
    watch = watches(job, "--json", dsn=db.dsn)
    watch.json()
    watch.stderr_until("watching")
    db.sql("DELETE FROM etl_jobs WHERE id = %s", job)
    db.sql("SELECT pg_notify('etl_job_status', %s)", json.dumps({"job_id": job}))
    assert watch.json() == {"job_id": job, "overall": None, "steps": None, "resync": False, "deleted": True}


def test_a_foreign_notification_rereads_the_watched_jobs(db, watches):
    job = db.job("Jira", status=running(value="idle"))
    watch = watches(job, "--json", dsn=db.dsn)
    watch.json()
    watch.stderr_until("watching")
    db.sql("UPDATE etl_jobs SET status = %s WHERE id = %s", Jsonb(running(value="finished")), job)
    db.sql("NOTIFY etl_job_status, 'refresh'")  # another program's message on the same channel
    assert watch.json()["steps"][JIRA_STEPS[0]] == {"extraction": "finished", "transform": "finished",
                                                    "embedding": "finished"}


def test_watching_every_job_describes_a_start_by_its_transition(db, cli, watches):
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, db.integration(tenant))
    watch = watches(dsn=db.dsn)
    watch.stderr_until("watching every job")
    assert cli("schedule-next").exit_code == 0
    assert watch.line().split() == ["TIME", "JOB", "NAME", "TENANT", "OVERALL", "CHANGE"]
    assert watch.line().split()[1:] == [str(job), "Jira", "acme", "RUNNING", "READY", "→", "RUNNING"]
    assert watch.stop(signal.SIGINT) == 130


def test_watching_every_job_catches_up_on_what_etlctl_changed_while_disconnected(db, cli, watches):
    """A job that was not in flight (so not held in memory) starts while watch is cut off: the audit log tells."""
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, db.integration(tenant))
    watch = watches("--json", dsn=db.dsn)
    watch.stderr_until("watching every job")
    watch.proc.send_signal(signal.SIGSTOP)  # frozen while its connections are cut and the job starts
    try:
        assert kill_watch_connections(db) == 2
        assert cli("schedule-next").exit_code == 0  # its notification reaches no one
    finally:
        watch.proc.send_signal(signal.SIGCONT)
    assert watch.stderr_until("reconnected") == "etlctl: reconnected; 1 change while disconnected"
    line = watch.json()
    assert (line["job_id"], line["overall"], line["resync"]) == (job, "RUNNING", True)
    assert watch.stop(signal.SIGTERM) == 143


def test_watch_sees_a_plain_update_from_another_connection(db, watches):
    """The existing workers write the table directly and send no NOTIFY: watch's poll still sees it."""
    job = db.job("Jira", status=running(value="idle", token="w"))
    watch = watches(job, "--json", dsn=db.dsn)
    watch.json()
    watch.stderr_until("watching")
    worker = psycopg.connect(db.dsn, autocommit=True)
    try:
        worker.execute("UPDATE etl_jobs SET status = jsonb_set(status, %s, '\"running\"') WHERE id = %s",
                       (["steps", JIRA_STEPS[1], "transform"], job))
        expected = idle()
        expected[JIRA_STEPS[1]]["transform"] = "running"
        assert watch.json() == {"job_id": job, "overall": "RUNNING", "steps": expected, "resync": False}
    finally:
        worker.close()
    watch.no_line(1.5)  # an unchanged digest is not printed again


def test_watching_every_job_sees_another_programs_start_and_reset(db, cli, watches):
    """Without JOBs: a job that enters flight or leaves it through a plain UPDATE is seen too."""
    tenant = db.tenant("acme")
    job = db.job("Jira", tenant, db.integration(tenant), status={"overall": "READY", "steps": idle()})
    watch = watches("--json", dsn=db.dsn)
    watch.stderr_until("watching every job")
    with psycopg.connect(db.dsn, autocommit=True) as other:
        other.execute("""UPDATE etl_jobs SET status = status || '{"overall": "RUNNING", "token": "run-now"}'
                         WHERE id = %s""", (job,))
        assert watch.json() == {"job_id": job, "overall": "RUNNING", "steps": idle(), "resync": False}
        other.execute("""UPDATE etl_jobs SET status = status || '{"overall": "READY", "token": null}'
                         WHERE id = %s""", (job,))
        assert watch.json() == {"job_id": job, "overall": "READY", "steps": idle(), "resync": False}


def test_watch_with_a_tenant_watches_only_that_tenants_jobs(db, cli, watches):
    """Notified starts (schedule-next), changes by a plain UPDATE (the poll) and a resync: beta's never show."""
    acme, beta = db.tenant("acme"), db.tenant("beta")
    mine = db.job("Jira", acme, db.integration(acme))
    theirs = db.job("Jira", beta, db.integration(beta))
    watch = watches("--tenant", "acme", "--json", dsn=db.dsn)
    assert watch.stderr_until("watching") == "etlctl: watching every job of tenant acme on etl_job_status (Ctrl-C to stop)"
    assert cli("schedule-next").exit_code == 0  # starts both, and notifies both
    assert {db.status(mine)["overall"], db.status(theirs)["overall"]} == {"RUNNING"}
    assert watch.json()["job_id"] == mine
    db.sql("UPDATE etl_jobs SET status = jsonb_set(status, %s, '\"running\"') WHERE id = %s",
           ["steps", JIRA_STEPS[0], "extraction"], theirs)
    db.sql("UPDATE etl_jobs SET status = jsonb_set(status, %s, '\"running\"') WHERE id = %s",
           ["steps", JIRA_STEPS[1], "extraction"], mine)
    assert watch.json()["job_id"] == mine
    watch.no_line(2.5)  # two polls: beta's change never shows
    assert watch.stop(signal.SIGINT) == 130


def test_watch_of_an_unknown_tenant_exits_5(db, watches):
    watch = watches("--tenant", "nobody", dsn=db.dsn)
    assert watch.proc.wait(timeout=TIMEOUT) == 5
    assert watch.stderr_until("no tenant") == "etlctl: no tenant 'nobody'"
