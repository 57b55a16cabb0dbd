"""`etlctl watch`: the command-line form of the flow document's WebSocket
messages.

Two connections: one LISTENs on ``etl_job_status`` and does nothing else (so
it is easy to find in pg_stat_activity: its query is the LISTEN), the other
re-reads a job when a notification names it. A change is printed when the
job's overall state or any phase differs from what was last printed.

Not every writer notifies: the existing workers update the table directly and
send no NOTIFY. So watch also polls, every POLL seconds, a digest of the rows
it watches (``md5(status::text)`` of the JOBs given, or of every job in flight
plus those it remembers, a few bytes per job through the in-flight index) and
re-reads the jobs whose digest changed: any writer's change shows within about
two POLLs. A trigger would be exact, but it would run inside every other
writer's transaction; a poll costs one small query per second on watch's own
connection.

NOTIFY is not replayed: when a connection is lost (server restart,
pg_terminate_backend, network), watch reconnects with backoff, LISTENs again,
then re-reads every watched job and prints what changed meanwhile (marked
``resync``).

Without JOBs, watch does not hold every job of a big database: it remembers
the jobs in flight (RUNNING or FINISHED) and those it saw change, forgets a job
once it is back to READY, finds the jobs changed while it was disconnected in
the audit log (every etlctl change has a row there, with an increasing id), and
describes the first change it sees of a job it did not know by that job's
latest audited transition.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from etlctl.store import clock
from etlctl.errors import DatabaseUnavailable, JobNotFound
from etlctl.core.job import Job, JobRef
from etlctl.store import connection, jobs

CHANNEL = "etl_job_status"
POLL = 1.0  # seconds between looks at Ctrl-C, the keep-alive and the digests of the watched rows
KEEPALIVE = 30.0  # seconds of silence after which the listening connection is probed
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


@dataclass(frozen=True)
class Seen:
    """A job as last printed: the flow document's message, and who it is."""

    job_id: int
    name: str
    tenant: str
    overall: object
    steps: object

    def message(self) -> dict:
        return {"overall": self.overall, "steps": self.steps}


IN_FLIGHT = ("RUNNING", "FINISHED")


@dataclass(frozen=True)
class Change:
    at: object  # the database's time when it was read
    before: Seen | None  # None: first sight
    after: Seen | None  # None: the job was deleted
    resync: bool = False
    transition: tuple | None = None  # (from, to) from the audit, when `before` is not known

    @property
    def job_id(self) -> int:
        return (self.after or self.before).job_id


def seen(job: Job) -> Seen:
    return Seen(job.id, job.job_name, str(job.tenant_name or job.tenant_id), job.overall,
                job.completion.steps_status if isinstance(job.status, dict) else None)


class Watcher:
    """LISTEN, print changes, reconnect; runs until interrupted."""

    def __init__(self, connect: Callable[[], object], job_ids: Sequence[int] | None, printer,
                 note: Callable[[str], None], tenant_ids: Sequence[int] | None = None, tenant: str | None = None) -> None:
        self.connect = connect  # returns an open etlctl.db.Session
        self.job_ids = list(job_ids) if job_ids else None
        self.tenant_ids = list(tenant_ids) if tenant_ids else None  # --tenant without JOBs: only its jobs
        self.tenant = tenant
        self.printer = printer  # views.watch.Printer: receives each Change
        self.note = note
        self.known: dict[int, Seen] = {}
        self.digests: dict[int, str] = {}  # job id -> md5 of its status, as last polled
        self.mark = 0  # the newest audit row when last read: what changed after it, changed since
        self.listener = None
        self.reader = None

    # --- connections ------------------------------------------------------------

    def open(self) -> None:
        self.close()
        self.listener = self.connect()
        self.listener.run("watch_listen")  # listen first: nothing committed after the read below is missed
        self.reader = self.connect()

    def close(self) -> None:
        for session in (self.listener, self.reader):
            if session is not None:
                session.close()
        self.listener = self.reader = None

    # --- reading --------------------------------------------------------------------

    def read(self, ids: Sequence[int] | None) -> tuple[object, dict[int, Seen]]:
        """Jobs by id; None: every job in flight. Also moves the audit mark."""
        self.mark = self.reader.one("watch_audit_mark")["mark"]
        rows = (self.reader.all("oncall_jobs", job_ids=list(ids)) if ids is not None
                else self.reader.all("watch_in_flight", tenant_ids=self.tenant_ids))
        if self.tenant_ids is not None:
            # A notification, or a writer's change, names any job: keep to the tenant's.
            rows = [row for row in rows if row["tenant_id"] in self.tenant_ids]
        now = rows[0]["now"] if rows else self.reader.one("oncall_clock")["db_clock"]
        return now, {row["id"]: seen(Job.from_row(row)) for row in rows}

    def watched(self, resync: bool) -> list[int]:
        """The jobs to look at again: the JOBs given; else those remembered, plus, after a
        disconnection, those etlctl changed meanwhile."""
        if self.job_ids is not None:
            return list(self.job_ids)
        ids = set(self.known)
        if resync:
            ids |= {row["job_id"] for row in self.reader.all("watch_changed_since", mark=self.mark,
                                                             tenant_ids=self.tenant_ids)}
        return sorted(ids)

    def refresh(self, ids: Sequence[int] | None, resync: bool = False) -> int:
        """Re-read jobs (None: every watched job) and print what differs from what was printed."""
        wanted = list(ids) if ids is not None else self.watched(resync)
        now, current = self.read(wanted)
        unknown = [i for i in current if i not in self.known]
        transitions = ({row["job_id"]: (row["from_state"], row["to_state"])
                        for row in self.reader.all("watch_last_transition", job_ids=unknown)}
                       if unknown and self.job_ids is None else {})
        gone = [i for i in wanted if i in self.known and i not in current]
        printed = 0
        for job_id, state in current.items():
            before = self.known.get(job_id)
            if before is not None and (before.overall, before.steps) == (state.overall, state.steps):
                continue
            self.known[job_id] = state
            self.printer.change(Change(now, before, state, resync, transitions.get(job_id)))
            printed += 1
            if self.job_ids is None and state.overall not in IN_FLIGHT:
                del self.known[job_id]  # back out of flight: its next change is a start, which the audit tells
        for job_id in gone:
            self.printer.change(Change(now, self.known.pop(job_id), None, resync))
            printed += 1
        return printed

    # --- the loop -------------------------------------------------------------------

    def start(self, show_current: bool) -> None:
        self.open()
        now, current = self.read(self.job_ids)
        missing = [i for i in self.job_ids or () if i not in current]
        if missing:
            raise JobNotFound(ref=", ".join(str(i) for i in missing))
        self.known = current
        if show_current:
            for state in current.values():
                self.printer.change(Change(now, None, state))
        what = (f"job{'s' if len(self.job_ids) > 1 else ''} {', '.join(str(i) for i in self.job_ids)}"
                if self.job_ids else f"every job of tenant {self.tenant}" if self.tenant_ids else "every job")
        self.note(f"etlctl: watching {what} on {CHANNEL} (Ctrl-C to stop)")

    def run(self, show_current: bool = False) -> None:
        try:
            self.start(show_current)
            while True:
                try:
                    self.listen()
                except DatabaseUnavailable as exc:
                    self.note(f"etlctl: connection lost ({exc.context.get('reason') or exc.message}); reconnecting")
                    self.reconnect()
        finally:
            self.close()

    def listen(self) -> None:
        quiet = 0.0
        polled = time.monotonic()
        while True:
            got = False
            for notification in self.listener.notifications(timeout=POLL):
                got = True
                self.on_notify(notification.payload)
                if time.monotonic() - polled >= POLL:
                    break  # a stream of notifications must not hold back the poll
            if time.monotonic() - polled >= POLL:
                self.poll()
                polled = time.monotonic()
            quiet = 0.0 if got else quiet + POLL
            if quiet >= KEEPALIVE:
                self.listener.run("watch_listen")  # a round trip: raises when the connection is gone
                quiet = 0.0

    def poll(self) -> int:
        """Re-read the watched jobs whose status digest changed since the last poll (any writer's
        change, notified or not), the jobs that entered flight, and those that are gone."""
        ids = self.job_ids if self.job_ids is not None else sorted(self.known)
        rows = self.reader.all("watch_digests", job_ids=list(ids), in_flight=self.job_ids is None,
                               tenant_ids=self.tenant_ids)
        current = {row["id"]: row["digest"] for row in rows}
        changed = sorted({i for i, d in current.items() if self.digests.get(i) != d}
                         | {i for i in self.known if i not in current})
        self.digests = current
        return self.refresh(changed) if changed else 0

    def on_notify(self, payload: str) -> None:
        try:
            job_id = int(json.loads(payload)["job_id"])
        except (ValueError, TypeError, KeyError):
            self.refresh(None)  # a message etlctl did not write: look at everything watched
            return
        if self.job_ids is not None and job_id not in self.job_ids:
            return
        self.refresh([job_id])

    def reconnect(self) -> None:
        attempt = 0
        while True:
            self.close()
            clock.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1
            try:
                self.open()
                missed = self.refresh(None, resync=True)
            except DatabaseUnavailable as exc:
                if attempt in (1, 5) or attempt % 20 == 0:
                    self.note(f"etlctl: still cannot reach the database ({exc.context.get('reason') or exc.message}); "
                              "retrying")
                continue
            self.note(f"etlctl: reconnected; {missed} change{'s' if missed != 1 else ''} while disconnected")
            return


def watch(settings, command: str, refs: Sequence[JobRef], printer, note: Callable[[str], None],
          tenant: str | None = None) -> None:
    """`etlctl watch [JOB...] [--tenant T]`: find the JOBs (in the tenant), then print their changes
    (every job's of the tenant, or of the database, without JOBs) through ``printer`` until
    interrupted. Watch opens, holds and replaces its own connections."""
    ids = tenants = None
    if refs or tenant is not None:
        with connection.connect(settings, command) as session:
            tenants = jobs.tenant_ids(session, tenant)  # an unknown tenant exits 5 before watching anything
            if refs:
                ids = sorted({jobs.resolve(session, ref) for ref in refs})
    Watcher(lambda: connection.open_session(settings, command), ids, printer, note, tenants, tenant).run(
        show_current=ids is not None)
