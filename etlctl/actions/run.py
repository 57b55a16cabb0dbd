"""`etlctl run`: the sweep, schedule-next and the relay in one long-running
process, driven by deadlines and notifications rather than by a fixed tick.

A pass is a sweep (:func:`etlctl.actions.flow.sweep_tick`), a scheduler tick
(:func:`etlctl.actions.schedule.tick`) and, with a broker, a relay pass
(:func:`etlctl.actions.relay.relay_pass`) on one kept broker connection; then
one statement (``run_pass_done``) records the heartbeat and finds the earliest
deadline the database holds. The sweep goes first: a reset frees its
integration, and the tick right after starts the next due job in the same
pass; the relay then publishes what the tick queued.

Then it waits until that deadline (at most ``max_sleep``), or until a NOTIFY of
someone else's write wakes it (``etl_job_status``, ``etlctl_queue``). Its own
notifications are ignored: the pass that wrote them already followed them up.

Several runs (and cron's ticks) on several hosts never double-act: every write
is guarded, rows are taken with SKIP LOCKED, and the tick locks let one sweep
and one tick run at a time per database. A run that finds a tick lock held does
not take it for "nothing to do": the holder may have read its jobs before a
deadline passed (a cron sweep would then leave it for a minute), so it looks
again shortly (:data:`RETRY`), as it does for the deadlines its pass could not
act on (a row another session held locked, a message the broker refused, a job
whose queues could not be looked at): with backoff, never spinning, and never
holding up the other deadlines.

A lost database is said once, retried with backoff and said again when it is
back (nothing can be done meanwhile); a lost broker likewise, but the passes go
on without it (messages wait in the outbox, and jobs whose queues must be
looked at before their reset wait too).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from etlctl.actions import flow, peeking, schedule
from etlctl.actions.relay import Relay, StopRequests, relay_pass
from etlctl.actions.relay_follow import BACKOFF, WAIT_SLICE
from etlctl.broker.settings import BrokerSettings
from etlctl.core import lifecycle
from etlctl.core.humanize import duration
from etlctl.errors import (
    BrokerError,
    BrokerUnavailable,
    Busy,
    DatabaseUnavailable,
    EtlctlError,
    HealthFileError,
    Interrupted,
)
from etlctl.store import clock
from etlctl.store.settings import ConnectionSettings

NAME = "etlctl run"
DEFAULT_MAX_SLEEP = 30.0
MAX_MAX_SLEEP = 86400.0
# Seconds before looking again after a pass that left due work undone (a tick lock held by another
# process, a locked row, a refused message), growing while it stays so; a NOTIFY comes sooner.
RETRY = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TICK_LIMIT = 1000  # jobs one tick starts at most (schedule-next's default): a full tick is followed by another
_LABELS = {"database": "database", "broker": "message broker"}


@dataclass(frozen=True)
class RunConfig:
    """Everything run reads from its flags and environment (and read again on SIGHUP)."""

    settings: ConnectionSettings
    timings: lifecycle.Timings
    broker: BrokerSettings | None = None
    max_sleep: float = DEFAULT_MAX_SLEEP
    chain_grace: float = 60.0
    health_file: Path | None = None


@dataclass(frozen=True)
class Pass:
    """What one pass left behind, from ``run_pass_done``."""

    row: dict
    lost_lock: bool = False  # a tick lock was held by another process: it may not cover every deadline
    full: bool = False  # the tick started as many jobs as it may: more may be due now

    @property
    def behind(self) -> bool:
        """Due work the pass did not do: look again soon, with backoff."""
        row = self.row
        return self.lost_lock or bool(row["overdue_resets"] or row["overdue_starts"] or row["overdue_messages"])


class RunLog:
    """What run tells as it works; the CLI supplies a view that prints (:mod:`etlctl.views.run`)."""

    def started(self, config: RunConfig) -> None: ...

    def swept(self, steps) -> None: ...

    def ticked(self, tick) -> None: ...

    def relayed(self, handled) -> None: ...

    def passed(self, row: dict, wait: float) -> None: ...

    def reloaded(self, config: RunConfig) -> None: ...

    def note(self, text: str) -> None: ...


class RunSignals(StopRequests):
    """SIGINT and SIGTERM as the relay takes them (acted on between statements: the one in flight
    finishes; a second signal stops at once), and SIGHUP: read the configuration again before the
    next pass."""

    def __init__(self) -> None:
        super().__init__()
        self.reload = False

    def __enter__(self) -> RunSignals:
        super().__enter__()
        try:
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        except ValueError:
            pass  # not the main thread
        return self

    def _on_hangup(self, signum, frame) -> None:
        self.reload = True


class Runner:
    """One `etlctl run` process: passes and waits until a signal stops it."""

    def __init__(self, load_config: Callable[[], RunConfig], open_session: Callable[[ConnectionSettings], object],
                 log: RunLog, signals: RunSignals) -> None:
        self.load_config = load_config
        self.open_session = open_session
        self.log = log
        self.signals = signals
        self.config: RunConfig | None = None
        self.session = None
        self.backend_pid: int | None = None  # the session's server process: its notifications are our own
        self.relay: Relay | None = None
        self.broker_error: EtlctlError | None = None  # while the broker is down
        self.broker_retry_at = 0.0  # monotonic: the next attempt to reach it
        self.failures = {"database": 0, "broker": 0}
        self.down: dict[str, float] = {}  # "database" / "broker" -> since when (monotonic)
        self.behind = 0  # passes in a row that left due work undone

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Until SIGINT or SIGTERM (raised as Interrupted / Terminated). The first connections must work:
        a configuration that never worked is an error (exit 6 or 8), not an outage to wait out."""
        self.config = self.load_config()
        self.check_health_file()  # a setting that cannot work stops it before it acts, not after a pass
        try:
            self.start()
            while True:
                self.signals.check()
                if self.signals.reload:
                    self.reload()
                try:
                    self.connect()
                    done = self.one_pass()
                    # Back only once a pass went through: a connection that opens while every write still
                    # hangs (a synchronous standby gone) is no recovery.
                    self.back("database")
                    self.down.pop("lock", None)
                    self.failures["database"] = 0
                    seconds = self.next_wait(done)
                    self.log.passed(done.row, seconds)
                    clock.wait(self.until_event, seconds)
                except Busy as exc:
                    self.lock_waited(exc)
                except DatabaseUnavailable as exc:
                    self.database_lost(exc)
        except Interrupted:
            self.mark_stopped()
            raise
        finally:
            self.close()

    def start(self) -> None:
        self.connect()
        self.backend_pid = self.session.one("run_register", max_sleep=self.config.max_sleep)["backend_pid"]
        if self.config.broker is not None:
            self.relay = Relay(self.config.broker, NAME)
            self.relay.open()  # eagerly: a broker that never worked is exit 8 now, not a note later
        self.log.started(self.config)

    def connect(self) -> None:
        if self.session is not None:
            return
        session = self.open_session(self.config.settings)
        try:
            # Before the pass: nothing committed after it is missed.
            session.run("run_listen_jobs")
            session.run("relay_listen")
        except EtlctlError:
            session.close()
            raise
        self.session = session
        self.backend_pid = None

    def one_pass(self) -> Pass:
        began = time.monotonic()
        config = self.config
        broker_up = self.broker_ready()
        look = self.look(broker_up)
        try:
            swept = flow.sweep_tick(self.session, config.timings, on_batch=self.swept, look=look)
        finally:
            if look is not None:
                look.close()
        if broker_up and look is not None and look.error is not None:
            self.broker_lost(look.error)
            broker_up = False
        tick = schedule.tick(self.session, chain_grace=config.chain_grace, limit=TICK_LIMIT)
        self.log.ticked(tick)
        self.signals.check()
        if broker_up:
            try:
                report = relay_pass(self.session, self.relay, on_batch=self.log.relayed, stop=self.signals)
                if report.error is not None:
                    self.broker_lost(report.error)
            except (BrokerUnavailable, BrokerError) as exc:
                self.broker_lost(exc)
        row = self.session.one("run_pass_done", pass_seconds=time.monotonic() - began, delay=config.timings.delay,
                               max_wait=lifecycle.MAX_WAIT, relaying=config.broker is not None,
                               max_sleep=config.max_sleep)
        self.backend_pid = row["backend_pid"]
        self.touch_health()
        return Pass(row, lost_lock=not (swept.locked and tick.locked), full=len(tick.started) >= TICK_LIMIT)

    def swept(self, steps) -> None:
        self.log.swept(steps)
        self.signals.check()  # between the sweep's batches, each one committed

    def next_wait(self, done: Pass) -> float:
        """Until the earliest deadline, at most max_sleep; soon (with backoff) after a pass that left due work."""
        row = done.row
        if done.full:
            return 0.0
        seconds = self.config.max_sleep
        if row["next_at"] is not None:
            seconds = min(seconds, max(0.0, (row["next_at"] - row["now"]).total_seconds()))
        if done.behind:
            seconds = min(seconds, RETRY[min(self.behind, len(RETRY) - 1)])
            self.behind += 1
        else:
            self.behind = 0
        return seconds

    def until_event(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for someone else's NOTIFY or a signal, servicing the broker
        connection (its heartbeats) every second meanwhile; returns whether something came."""
        end = time.monotonic() + timeout
        while True:
            self.signals.check()
            if self.signals.reload:
                return True
            left = end - time.monotonic()
            if self.notified(max(0.0, min(WAIT_SLICE, left))):
                return True
            self.service_broker()
            if left <= WAIT_SLICE:
                return False

    def notified(self, timeout: float) -> bool:
        """Whether a notification of another session's write came within ``timeout`` (then the others
        already waiting are read too: one wake-up for all of them)."""
        waiting = self.session.notifications(timeout=timeout)
        try:
            foreign = any(note.pid != self.backend_pid for note in waiting)
        finally:
            waiting.close()  # it holds the connection's lock until closed
        if foreign:
            for _ in self.session.notifications(timeout=0):
                pass
        return foreign

    # --- the broker ------------------------------------------------------------------------

    def broker_ready(self) -> bool:
        """Whether the broker connection is open; reconnects when its backoff allows."""
        if self.relay is None:
            return False
        if self.relay.broker is not None and self.relay.broker.is_open:
            return True
        if time.monotonic() < self.broker_retry_at:
            return False
        try:
            self.relay.open()
        except (BrokerUnavailable, BrokerError) as exc:
            self.broker_lost(exc)
            return False
        self.broker_error = None
        self.failures["broker"] = 0
        self.back("broker")
        return True

    def look(self, broker_up: bool) -> peeking.QueueLook | None:
        """The sweep's look at the queues: none without a broker; while it is down, one that has already
        failed, so that the jobs to look at wait for the next pass without a connection attempt each."""
        if self.config.broker is None:
            return None
        look = peeking.QueueLook(self.config.broker)
        if not broker_up:
            look.error = self.broker_error
        return look

    def service_broker(self) -> None:
        if self.relay is None or self.relay.broker is None:
            return
        try:
            self.relay.service()
        except (BrokerUnavailable, BrokerError) as exc:
            self.broker_lost(exc)

    def broker_lost(self, exc: EtlctlError) -> None:
        self.say_lost("broker", exc)
        self.relay.close()
        self.broker_error = exc
        self.broker_retry_at = time.monotonic() + BACKOFF[min(self.failures["broker"], len(BACKOFF) - 1)]
        self.failures["broker"] += 1

    # --- outages, reloading, stopping ----------------------------------------------------------

    def database_lost(self, exc: EtlctlError) -> None:
        self.say_lost("database", exc)
        if self.session is not None:
            self.session.close()
            self.session = None
        self.sleep(BACKOFF[min(self.failures["database"], len(BACKOFF) - 1)])
        self.failures["database"] += 1

    def lock_waited(self, exc: Busy) -> None:
        """A lock held elsewhere outlasted lock_timeout: the server is there, and so is the session (its
        transaction rolled back); said once until a pass goes through, then tried again with backoff."""
        if "lock" not in self.down:
            self.down["lock"] = time.monotonic()
            self.log.note(f"etlctl: a pass waited too long for a lock ({exc.context.get('reason') or exc.message}); "
                          "trying again with backoff")
        if self.session is not None:  # a fresh session for the next pass, whatever state this one was left in
            self.session.close()
            self.session = None
        self.sleep(BACKOFF[min(self.failures["database"], len(BACKOFF) - 1)])
        self.failures["database"] += 1

    def say_lost(self, what: str, exc: EtlctlError) -> None:
        """Once per outage, however many attempts fail."""
        if what not in self.down:
            self.down[what] = time.monotonic()
            reason = exc.context.get('reason') or exc.message
            self.log.note(f"etlctl: lost the {_LABELS[what]} ({reason}); reconnecting with backoff")

    def back(self, what: str) -> None:
        since = self.down.pop(what, None)
        if since is not None:
            self.log.note(f"etlctl: reconnected to the {_LABELS[what]} after {duration(time.monotonic() - since)}")

    def sleep(self, seconds: float) -> None:
        """A backoff wait that still stops (or reloads) at once when asked to."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not self.signals.reload:
            self.signals.check()
            clock.sleep(min(WAIT_SLICE, left))
        self.signals.check()

    def reload(self) -> None:
        """SIGHUP: the configuration read again from the flags and environment it started with (and the
        files they name), and both connections opened again (libpq and the broker read theirs again)."""
        self.signals.reload = False
        try:
            config = self.load_config()
        except EtlctlError as exc:
            self.log.note(f"etlctl: SIGHUP: the configuration could not be read again ({exc.message}); "
                          "keeping the one it had")
            return
        self.close()
        self.config = config
        self.relay = Relay(config.broker, NAME) if config.broker is not None else None
        self.broker_error, self.broker_retry_at, self.behind = None, 0.0, 0
        self.failures = {"database": 0, "broker": 0}
        self.log.reloaded(config)

    def check_health_file(self) -> None:
        """The health file can be touched: it exists and is writable, or its folder takes a new file."""
        path = self.config.health_file
        if path is None:
            return
        folder = path.parent
        if path.exists():
            ok, why = os.access(path, os.W_OK), "not writable"
        else:
            ok = folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
            why = f"no folder {folder}" if not folder.is_dir() else f"cannot create a file in {folder}"
        if not ok:
            raise HealthFileError(path=str(path), reason=why)

    def touch_health(self) -> None:
        path = self.config.health_file
        if path is None:
            return
        try:
            path.touch()  # its modification time: now
        except OSError as exc:
            raise HealthFileError(path=str(path), reason=exc.strerror or str(exc)) from None

    def mark_stopped(self) -> None:
        """A run stopped on a signal says so in its heartbeat row (doctor does not report it)."""
        if self.session is None:
            return
        try:
            self.session.run("run_stopped")
        except (EtlctlError, Interrupted):
            pass  # the database is gone, or a second signal: doctor will call it lost

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        if self.relay is not None:
            self.relay.close()


def run(load_config: Callable[[], RunConfig], open_session: Callable[[ConnectionSettings], object],
        log: RunLog) -> None:
    """`etlctl run`: passes until SIGINT or SIGTERM (raised as Interrupted / Terminated)."""
    with RunSignals() as signals:
        Runner(load_config, open_session, log, signals).run()
