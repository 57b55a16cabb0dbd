"""`etlctl run` in-process under frozen time: it wakes at each deadline the database holds (a
reset-flow step, a FAILED job's retry, a next_run), no later and no sooner; what the deadline
query counts and leaves out; a locked row or a tick lock held elsewhere never holds up the rest.

The run's waits go through the clock seam (clock.wait): frozen time moves to the end of each wait,
so the deadlines can be asserted exactly. Real processes (NOTIFY, signals, several instances,
restarts): tests/test_run_process.py.
"""

from __future__ import annotations

import signal
from datetime import datetime, timedelta, timezone

import pytest

from etlctl.actions import run as running
from etlctl.core.lifecycle import Timings
from etlctl.errors import Terminated
from etlctl.store import connection
from etlctl.store.settings import ConnectionSettings
from tests.helpers import JIRA5_STEPS, finished, running as running_doc

START = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = START


def naive(seconds: float) -> str:
    """A naive timestamp (the table's zone is UTC here) ``seconds`` from START."""
    return (START + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat(sep=" ")


class Recorder(running.RunLog):
    """The run's log, kept: actions as (frozen time, text)."""

    def __init__(self) -> None:
        self.actions: list[tuple[datetime, str]] = []
        self.notes: list[str] = []
        self.stamp = lambda: datetime.now(timezone.utc)

    def swept(self, steps_) -> None:
        self.actions += [(self.stamp(), f"{s.decision.action} {s.job.id}") for s in steps_ if s.applied]

    def ticked(self, tick) -> None:
        self.actions += [(self.stamp(), f"start {row['id']}") for row in tick.started]

    def note(self, text: str) -> None:
        self.notes.append(text)


def config(db, **overrides) -> running.RunConfig:
    values = {"settings": ConnectionSettings(dsn=db.dsn), "timings": Timings(delay=10, backoff=(20, 40), cooldown=20),
              "max_sleep": 1000.0, **overrides}
    return running.RunConfig(**values)


def run_until(frozen, db, waits: int, *, on_wait=lambda n, seconds: None, log=None, load_config=None, **overrides):
    """Run in-process until its ``waits``-th wait; ``on_wait(n, seconds)`` before the n-th (from 0).
    Returns the log and the runner."""
    log = log or Recorder()
    signals = running.RunSignals()  # not entered: no process-wide handlers in a test
    runner = running.Runner(load_config or (lambda: config(db, **overrides)),
                            lambda s: connection.open_session(s, "run"), log, signals)
    frozen_wait, before = frozen.wait, len(frozen.waits)

    def wait(until_event, seconds):
        n = len(frozen.waits) - before
        if n >= waits:
            signals.signum = signal.SIGTERM  # stop at this wait
        on_wait(n, seconds)
        return frozen_wait(until_event, seconds)

    frozen.wait = wait
    try:
        with pytest.raises(Terminated):
            runner.run()
    finally:
        frozen.wait = frozen_wait
    frozen.waits.pop()  # the wait it stopped in
    return log, runner


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_it_wakes_at_each_deadline_and_acts_on_it(db, cli, frozen, acme):
    # A: RUNNING, completed now: first check at +10 (--delay), cool-down to +30, reset: next run +150 (2 min).
    a = db.job("Jira", acme, db.integration(acme), status=running_doc(JIRA5_STEPS), schedule_interval_minutes=2)
    assert cli("complete", a, "--delay", "10").exit_code == 0
    # B: FAILED 14 minutes ago, retried after 15: due at +60.
    b = db.job("Jira B", acme, db.integration(acme), status={"overall": "FAILED", "steps": {}},
               last_run_started_at=naive(-14 * 60), last_run_finished_at=naive(-14 * 60),
               last_updated_at=naive(-14 * 60), retry_interval_minutes=15)
    log, _ = run_until(frozen, db, 5)
    assert frozen.waits == [10, 20, 30, 90, 1000]
    assert log.actions == [(at(10), f"cooldown {a}"), (at(30), f"reset {a}"), (at(60), f"start {b}"),
                           (at(150), f"start {a}")]
    audit = [(r["at"], r["job_id"], r["details"].get("action") or r["to_state"]) for r in db.audit()][1:]
    assert audit == [(at(10), a, "cooldown"), (at(30), a, "reset"), (at(60), b, "RUNNING"), (at(150), a, "RUNNING")]


def test_a_next_run_changed_by_sql_is_seen_within_max_sleep(db, frozen, acme):
    job = db.job("Jira", acme, db.integration(acme), next_run=naive(3600))

    def operator(n, seconds):
        if n == 0:  # while it waits: an operator moves next_run to now, with no NOTIFY
            db.sql("UPDATE etl_jobs SET next_run = %s WHERE id = %s", naive(5), job)

    log, _ = run_until(frozen, db, 2, on_wait=operator, max_sleep=30.0)
    assert frozen.waits == [30, 30]
    assert log.actions == [(at(30), f"start {job}")]  # at the next pass, --max-sleep after the last one


def test_a_locked_row_waits_with_backoff_and_holds_up_nothing_else(db, frozen, acme):
    done = finished(JIRA5_STEPS)
    locked = db.job("Locked", acme, db.integration(acme), status={**done, "reset_stage": "check", "reset_attempt": 0,
                                                                   "reset_deadline": at(0).isoformat()})
    other = db.job("Other", acme, db.integration(acme), status={**done, "token": "tok-2", "reset_stage": "check",
                                                                 "reset_attempt": 0, "reset_deadline": at(1).isoformat()})
    holder = db.conn  # another session holds the row locked, as a worker's open transaction would
    holder.execute("BEGIN")
    holder.execute("SELECT 1 FROM etl_jobs WHERE id = %s FOR UPDATE", (locked,))

    def release(n, seconds):
        if n == 5:
            holder.execute("COMMIT")

    log, _ = run_until(frozen, db, 7, on_wait=release)
    # 0: `locked` is due but skipped (overdue: looked at again with backoff), `other` is due at 1: the
    # retries never push it back. 1: `other` acts on time. 8: the retry after the lock was let go.
    assert frozen.waits == [0.1, 0.25, 0.5, pytest.approx(0.15), 2, 5, 13]
    assert log.actions == [(at(1), f"cooldown {other}"), (at(8), f"cooldown {locked}"), (at(21), f"reset {other}")]


def test_a_tick_lock_held_elsewhere_means_look_again_soon_not_at_max_sleep(db, frozen, acme):
    """Another sweep (cron's, or another run's) holds the lock: it may have read its jobs before this
    deadline passed, so this run must look again shortly, not leave the deadline for --max-sleep."""
    done = finished(JIRA5_STEPS)
    job = db.job("Jira", acme, db.integration(acme), status={**done, "reset_stage": "check", "reset_attempt": 0,
                                                              "reset_deadline": at(0).isoformat()})
    db.sql("SELECT pg_advisory_lock(hashtext('etlctl.tick.sweep'))")

    def let_go(n, seconds):
        if n == 1:
            db.sql("SELECT pg_advisory_unlock(hashtext('etlctl.tick.sweep'))")

    log, _ = run_until(frozen, db, 3, on_wait=let_go)
    assert frozen.waits == [0.1, 0.25, 20]  # then its cool-down, 20 s
    assert log.actions == [(at(0.35), f"cooldown {job}"), (at(20.35), f"reset {job}")]


def pass_done(db, **params) -> dict:
    """run_pass_done as run calls it after a pass that took no time."""
    from etlctl.store.connection import open_session

    session = open_session(ConnectionSettings(dsn=db.dsn), "run")
    try:
        return session.one("run_pass_done", **{"pass_seconds": 0, "delay": 10, "max_wait": 86400,
                                               "relaying": False, "max_sleep": 30, **params})
    finally:
        session.close()


def test_the_deadlines_are_those_the_sweep_and_the_tick_act_on(db, frozen, acme):
    done = finished(JIRA5_STEPS)

    def flow(name, **keys):
        return db.job(name, acme, db.integration(acme), status={**done, **keys}, last_run_finished_at=naive(-5))

    # Left out: what the sweep skips (it waits for a person: doctor reports it) and what no tick starts.
    flow("Gave up", reset_stage="gave_up", reset_token="tok-1", reset_gave_up_at=at(-60).isoformat())
    flow("No offset", reset_stage="check", reset_deadline="2026-11-28 15:00:20")
    flow("Too far", reset_stage="check", reset_deadline=at(2 * 86400).isoformat())
    flow("Bad stage", reset_stage="later", reset_deadline=at(20).isoformat())
    flow("Bad attempt", reset_stage="check", reset_attempt="2", reset_deadline=at(20).isoformat())
    flow("Bad token", token=7, reset_deadline=at(20).isoformat())
    busy = db.integration(acme)
    db.job("Running", acme, busy, status=running_doc(JIRA5_STEPS))
    db.job("Busy", acme, busy, next_run=naive(-60))
    db.job("Inactive", acme, db.integration(acme), next_run=naive(-60), active=False)
    db.job("wex fabric", acme, db.integration(acme, "WEX Fabric"), next_run=naive(-60))  # no message: never started
    idle = db.integration(acme, active=False)
    db.job("Jira on an inactive integration", acme, idle, next_run=naive(-60))
    assert pass_done(db)["next_at"] is None and pass_done(db)["overdue_resets"] == 0
    assert pass_done(db)["overdue_starts"] == 0

    # Counted: a pending reset's deadline; keys of an earlier run (the first check, --delay after the finish).
    pending = flow("Pending", reset_stage="cooldown", reset_attempt=1, reset_deadline=at(25).isoformat())
    row = pass_done(db)
    assert (row["next_at"], row["next_what"]) == (at(25), f"the reset flow of job {pending}")
    earlier = flow("Earlier run", reset_stage="gave_up", reset_token="tok-0", reset_deadline=None)
    row = pass_done(db)
    assert (row["next_at"], row["next_what"]) == (at(5), f"the reset flow of job {earlier}")
    # A due start, and one already due at the pass's start: overdue (the pass did not start it).
    ready = db.job("Jira later", acme, db.integration(acme), next_run=naive(3))
    assert (pass_done(db)["next_at"], pass_done(db)["next_what"]) == (at(3), f"the start of job {ready}")
    db.job("Jira due", acme, db.integration(acme), next_run=naive(-1))
    row = pass_done(db)
    assert (row["overdue_starts"], row["overdue_resets"]) == (1, 0)
    flow("Due", reset_stage="check", reset_deadline=at(-1).isoformat())
    assert pass_done(db)["overdue_resets"] == 1
    # A reset due during the pass (after its start) is no overdue one: the next pass takes it at once.
    assert pass_done(db, pass_seconds=2)["overdue_resets"] == 0

    # The outbox counts only when a broker publishes it.
    db.sql("INSERT INTO etlctl.queue (created_at, job_id, tenant_id, token, step, queue_name, message) "
           "VALUES (%s, %s, %s, 'tok-1', 'jira_projects_and_issue_types', 'extraction_queue_premium', '{}')",
           at(-2), ready, acme)
    assert pass_done(db)["overdue_messages"] == 0
    assert pass_done(db, relaying=True)["overdue_messages"] == 1
    heartbeat = db.one("SELECT host, pid, passes, max_sleep, last_pass_at FROM etlctl.runners")
    assert (heartbeat["passes"], heartbeat["max_sleep"], heartbeat["last_pass_at"]) == (12, 30, at(0))  # one a call


def test_quiet_when_nothing_happens_and_with_v_a_heartbeat_line_a_minute(db, frozen, acme, capsys):
    from etlctl.views.run import RunPrinter

    db.job("Jira", acme, db.integration(acme), next_run=naive(3600))
    run_until(frozen, db, 4, log=RunPrinter(host="etl-1", pid=7), max_sleep=30.0)  # passes at 0, 30, ... 120
    assert capsys.readouterr() == ("", "etlctl: run started on etl-1 (pid 7): waits at most 30s; reset flow: delay "
                                       "10s, backoff 20s,40s, cool-down 20s; no broker (messages wait in the outbox)\n")
    run_until(frozen, db, 4, log=RunPrinter(verbose=True, host="etl-1", pid=7), max_sleep=30.0)  # 120 ... 240
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[1:] == [  # 60 s after the printer was made, then 60 s later
        "etlctl: run alive: 3 passes, 0 actions in the last 1m; next: the start of job 1 at 16:00:00; waking in 30s",
        "etlctl: run alive: 5 passes, 0 actions in the last 1m; next: the start of job 1 at 16:00:00; waking in 30s",
    ]


def test_sighup_rereads_the_configuration_and_keeps_the_old_one_when_it_no_longer_reads(db, frozen, acme):
    from etlctl.errors import UsageError

    db.job("Jira", acme, db.integration(acme), next_run=naive(3600))
    loads = [config(db, max_sleep=30.0), config(db, max_sleep=10.0), None]
    runner_box = []

    def load():
        found = loads.pop(0)
        if found is None:
            raise UsageError(message="invalid ETLCTL_MAX_SLEEP '0': expected a wait longer than 0")
        return found

    def hang_up(n, seconds):
        if n in (1, 3):
            runner_box[0].signals.reload = True  # SIGHUP, as RunSignals takes it

    log = Recorder()
    original = running.Runner.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        runner_box.append(self)

    running.Runner.__init__ = keep
    try:
        run_until(frozen, db, 5, on_wait=hang_up, log=log, load_config=load)
    finally:
        running.Runner.__init__ = original
    # 30 s; SIGHUP during the 2nd wait (it ends it): read again, 10 s; SIGHUP during the 4th: unreadable, 10 s kept.
    assert frozen.waits == [30, 30, 10, 10, 10]
    assert datetime.now(timezone.utc) == at(30 + 10 + 10)  # the two waits a SIGHUP ended took no time
    assert log.notes == ["etlctl: SIGHUP: the configuration could not be read again (invalid ETLCTL_MAX_SLEEP '0': "
                         "expected a wait longer than 0); keeping the one it had"]
    assert loads == []


def test_a_lock_that_outlasts_lock_timeout_is_said_once_and_never_as_a_lost_database(db, frozen, acme):
    """A lock held elsewhere (here on its heartbeat row) is no outage: said once, tried again with backoff,
    and once the lock goes, no "reconnected" line claims a recovery from an outage that never was."""
    import threading

    holder = db.conn
    released = threading.Event()

    def release():
        holder.execute("ROLLBACK")
        released.set()

    def on_wait(n, seconds):
        if n == 1:  # after the first pass: its heartbeat row exists; let go after a few lock timeouts
            holder.execute("BEGIN")
            holder.execute("SELECT 1 FROM etlctl.runners FOR UPDATE")
            threading.Timer(1.0, release).start()

    log, runner = run_until(frozen, db, 3, on_wait=on_wait, max_sleep=1.0,
                            settings=ConnectionSettings(dsn=db.dsn, lock_timeout=0.2))
    assert released.wait(10)
    lock_notes = [n for n in log.notes if "lock" in n]
    assert len(lock_notes) == 1 and lock_notes[0].startswith("etlctl: a pass waited too long for a lock ("), log.notes
    assert lock_notes[0].endswith("); trying again with backoff")
    assert not any("lost the database" in n or "reconnected" in n for n in log.notes), log.notes
