"""schedule-next against the database: one tick, and the queue it feeds."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from etlctl.actions.relay import Handled, PassReport, publish_now
from etlctl.broker.settings import BrokerSettings
from etlctl.core.due import why_not
from etlctl.errors import BrokerError, BrokerUnavailable, Conflict, EtlctlError, PublishDeferred, UsageError
from etlctl.store.jobs import check_tenant

# A unique violation on the one-RUNNING index: another writer started a job first.
_TAKEN = re.compile(r"\(integration_id\)=\((\d+)\)")
MAX_RACES = 3


@dataclass
class Tick:
    locked: bool = True  # False: another tick holds this database's scheduler lock
    started: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {integration_id, reason}
    chained: list[dict] = field(default_factory=list)
    not_started: list[dict] = field(default_factory=list)  # with --explain: {job..., reason}
    # With a broker: what became of the messages this tick queued (published right after the commit),
    # and what stopped that (the broker could not be reached: they wait in the outbox).
    published: PassReport | None = None
    publish_error: EtlctlError | None = None

    @property
    def queued_ids(self) -> list[int]:
        return [row["queue_id"] for row in self.started if row["queue_id"] is not None] + \
            [row["queue_id"] for row in self.chained]


def tick(session, *, tenant: str | None = None, limit: int = 1000, chain_grace: float = 60.0,
         explain: bool = False, explain_limit: int = 1000, exclusive: bool = True,
         broker: BrokerSettings | None = None,
         on_published: Callable[[list[Handled]], None] = lambda handled: None) -> Tick:
    """One non-blocking scheduler tick, in one transaction (on a --dry-run session, rolled back with it).

    ``exclusive`` takes the per-database tick lock first, so that a second
    tick at the same moment returns at once; correctness never depends on it.
    An unknown ``tenant`` is NotFound rather than a tick that starts nothing.
    With a ``broker``, the messages the tick queued are published right after
    its commit (not on a --dry-run); whatever that cannot publish waits in the
    outbox for `etlctl relay`, and the tick itself stands.
    """
    check_tenant(session, tenant)
    result = Tick()
    with contextlib.ExitStack() as stack:
        if exclusive and not stack.enter_context(session.tick_lock("schedule")):
            result.locked = False
            return result
        with session.transaction():
            _start(session, result, tenant, limit)
            result.chained = session.all("schedule_chain", tenant=tenant, grace=chain_grace)
            if explain:
                _explain(session, result, tenant, explain_limit)
    if broker is not None and not session.dry_run:
        if result.queued_ids:
            _publish(session, broker, result, on_published)
        else:
            result.published = PassReport()  # nothing queued: nothing to publish, no connection made
    return result


def _publish(session, broker: BrokerSettings, result: Tick, on_published) -> None:
    ids = result.queued_ids
    try:
        result.published = publish_now(session, broker, ids, on_batch=on_published)
    except BrokerUnavailable as exc:
        # Nothing was marked; the starts are committed. A relay (or the next tick's) publishes them.
        waiting = f"the {len(ids)} messages just queued wait" if len(ids) != 1 else "the message just queued waits"
        result.publish_error = PublishDeferred(exc.detail, problem=exc.message, waiting=waiting)
        return
    except BrokerError as exc:
        result.publish_error = exc
        return
    if result.published.error is not None:
        error = result.published.error
        waiting = "the messages not confirmed wait"
        result.publish_error = PublishDeferred(error.detail, problem=error.message, waiting=waiting) \
            if isinstance(error, BrokerUnavailable) else error


def _start(session, result: Tick, tenant: str | None, limit: int) -> None:
    for _ in range(MAX_RACES):
        try:
            with session.transaction():  # a savepoint: a lost race undoes only this attempt
                claimed = [r["integration_id"] for r in session.all("schedule_claim", tenant=tenant, limit=limit)]
                result.started = session.all("schedule_start", integrations=claimed, unbound=True,
                                             tenant=tenant, limit=limit)
                return
        except Conflict as exc:
            # The index refused a second RUNNING job: someone outside this tick won. Say who; try again.
            match = _TAKEN.search(exc.detail or "")
            result.skipped.append({
                "integration_id": int(match.group(1)) if match else None,
                "reason": "another scheduler started a job on it first",
            })
    # Still racing after several tries: leave the rest for the next tick.


def _explain(session, result: Tick, tenant: str | None, explain_limit: int) -> None:
    started = {row["id"] for row in result.started}
    started_on = {row["integration_id"]: row["id"] for row in result.started if row["integration_id"] is not None}
    for row in session.all("schedule_plan", job_ids=None, tenant=tenant, limit=explain_limit):
        if row["id"] in started:
            continue
        winner = started_on.get(row["integration_id"])
        if winner is not None and row["busy_job_id"] == winner:
            # Busy only because of what this very tick started: judge the job without that.
            row = {**row, "busy_job_id": None}
        reason = why_not(row, row["now"])
        if reason is None and winner is not None:
            reason = f"integration {row['integration_id']}: job {winner} starts first (earlier next_run)"
        elif reason is None:
            reason = "due, but not started this tick (limit reached, or another scheduler holds its integration)"
        result.not_started.append({
            "job_id": row["id"], "job_name": row["job_name"], "tenant_id": row["tenant_id"],
            "tenant": row["tenant_name"], "overall": row["overall"], "reason": reason,
        })


# --- the queue -------------------------------------------------------------------


def queue_list(session, *, pending: bool, limit: int) -> tuple[list[dict], bool]:
    """The newest ``limit`` messages (only those not done with ``pending``), oldest first, and
    whether there are more."""
    rows = session.all("queue_list", pending=pending, limit=limit + 1)  # one more: are there more?
    return rows[-limit:], len(rows) > limit


def claim(session, *, phase: str, worker: str) -> dict | None:
    if not worker.strip():
        raise UsageError(message="--worker must name the worker, for example --worker extraction-1")
    return session.one("queue_claim", phase=phase, worker=worker)


def done(session, message_id: int) -> str:
    from etlctl.errors import NotFound

    row = session.one("queue_done", id=message_id)
    if row is None:
        raise NotFound(message=f"no queue message {message_id}")
    return "done" if row["changed"] else "already"
