"""The reset flow against the database: complete, step, check, reset and sweep,
and the guarded transitions they (and :mod:`etlctl.actions.wait_and_reset`) write.

Decisions come from :mod:`etlctl.core.rules` and :mod:`etlctl.core.lifecycle`
(pure); this module reads jobs, applies decisions with the guarded statements
of ``sql/queries/flow.sql`` and says why when a guard did not match.

Each command is one call here, given JOB as the user typed it (a
:class:`~etlctl.core.job.JobRef`) or a job id. On a ``--dry-run`` session
everything runs as usual and is rolled back with the session's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from etlctl.store import clock
from etlctl.core import document, lifecycle, rules
from etlctl.errors import (
    AmbiguousToken,
    Busy,
    Conflict,
    EtlctlError,
    JobNotFound,
    NotFinished,
    StaleToken,
    TokenTooShort,
    UsageError,
)
from etlctl.core.job import TOKEN_PREFIX, Job, JobRef
from etlctl.store.jobs import load, resolve, tenant_ids

# The keys of the status document that etlctl reads to decide, and so guards on.
OWNED_KEYS = ("overall", "token") + lifecycle.RESET_KEYS
RUN_KEYS = ("overall", "token")
CONCURRENT_RETRIES = 3


def _doc(status: object) -> dict:
    return status if isinstance(status, dict) else {}


def guard(status: object, keys: Iterable[str] = OWNED_KEYS) -> tuple[dict, list[str]] | None:
    """The guard of a write: these keys must keep the values read, absent ones stay absent. None when
    a value is not a plain JSON scalar (a guard on it could never match, or never be written):
    the caller then guards on the whole document."""
    if not isinstance(status, dict):
        return None  # a document that is not an object: ?| and @> read it otherwise
    doc = status
    keys = tuple(keys)
    expected = {k: doc[k] for k in keys if k in doc}
    if not all(document.plain(v) for v in expected.values()):
        return None
    return expected, [k for k in keys if k not in doc]


def _text(value: object) -> str | None:
    """A run key for the audit row's columns (from_state, token): text, or nothing."""
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Transition:
    job_id: int
    action: str
    expected: dict | None  # None: guarded on the whole document instead (status_digest)
    absent: list[str]
    reason: str
    # md5 of the steps that were judged, computed by PostgreSQL (job_row.steps_digest): the
    # write's guard compares it there, so no JSON value is ever rounded through Python.
    steps_digest: str | None = None
    check_steps: bool = False
    # md5 of the whole document as read: the guard of a forced reset that drops what etlctl
    # cannot read, or whose run keys are no plain values.
    status_digest: str | None = None
    drop: tuple[document.Part, ...] = ()
    from_state: str | None = None  # for the audit row
    token: str | None = None
    stage: str | None = None
    deadline: datetime | None = None
    attempt: int | None = None
    details: dict = field(default_factory=dict)


def transition_for(job: Job, decision: lifecycle.Decision, command_details: dict | None = None) -> Transition:
    # A decision to write is made only on a document whose owned keys were checked (lifecycle.reset_state):
    # a guard on them always exists; the whole document is the fallback all the same.
    found = guard(job.status)
    expected, absent = found if found is not None else (None, [])
    # A reset or a give-up is only right for the steps it judged.
    judged = decision.action in (lifecycle.RESET, lifecycle.GIVE_UP)
    return Transition(
        job_id=job.id,
        action=decision.action,
        expected=expected,
        absent=absent,
        reason=decision.reason,
        steps_digest=job.steps_digest if judged else None,
        check_steps=judged,
        status_digest=None if found is not None else job.status_digest,
        from_state=_text(_doc(job.status).get("overall")),
        token=_text(job.token),
        stage=decision.stage,
        deadline=decision.deadline,
        attempt=decision.attempt,
        details=dict(command_details or {}),
    )


def apply(session, transitions: list[Transition], skip_locked: bool = False) -> list[dict]:
    """Apply guarded transitions in one statement; returns the rows that changed.

    ``skip_locked`` leaves out rows another session holds locked (a sweep: they are
    picked up by the next tick) instead of waiting for them up to lock_timeout.
    """
    if not transitions:
        return []
    from psycopg.types.json import Jsonb

    return session.all(
        "apply_transitions_skip_locked" if skip_locked else "apply_transitions",
        job_ids=[t.job_id for t in transitions],
        actions=[t.action for t in transitions],
        expected=[None if t.expected is None else Jsonb(t.expected) for t in transitions],
        absent=[Jsonb(t.absent) for t in transitions],
        steps_digests=[t.steps_digest for t in transitions],
        check_steps=[t.check_steps for t in transitions],
        status_digests=[t.status_digest for t in transitions],
        drops=[Jsonb([list(part.path) for part in t.drop]) for t in transitions],
        from_states=[t.from_state for t in transitions],
        tokens=[t.token for t in transitions],
        stages=[t.stage for t in transitions],
        deadlines=[t.deadline for t in transitions],
        attempts=[t.attempt for t in transitions],
        reasons=[t.reason for t in transitions],
        details=[Jsonb(t.details) for t in transitions],
    )


# --- complete --------------------------------------------------------------


def complete(session, ref: JobRef | int, *, token: str | None, sync_date: str | None, delay: float) -> dict:
    """RUNNING -> FINISHED with a pending reset. Idempotent on the same run."""
    job_id = resolve(session, ref)
    for _ in range(CONCURRENT_RETRIES):
        row = session.one("complete_job", job_id=job_id, token=token, min_prefix=TOKEN_PREFIX, sync_date=sync_date,
                          delay=delay)
        if row is None:
            raise JobNotFound(ref=job_id)
        if row["changed"]:
            return {"job_id": job_id, "result": "completed", "overall": "FINISHED", "token": row["token"],
                    "status": row["new_status"], "last_sync_date": row["last_sync_date"], "now": row["now"]}
        refused = token_refused(job_id, token, row)
        if refused is not None:
            raise refused
        if row["overall"] == "FINISHED":
            return {"job_id": job_id, "result": "already", "overall": "FINISHED", "token": row["token"]}
        if row["overall"] != "RUNNING":
            raise Conflict(message=f"job {job_id} is {rules.state_text(row['overall'])}, not RUNNING; nothing changed")
        # It was RUNNING with this token in our snapshot, yet the guard missed: a concurrent writer. Look again.
    raise Busy(reason=f"job {job_id} kept changing while completing it")


def token_refused(job_id: int, token: str | None, row: dict) -> EtlctlError | None:
    """Why --token did not name the job's current run, as the write's own guard decided
    (`_run_token_matches`); None when it did. The error never shows the current token:
    pasting it back would defeat the guard, so it says where to look it up."""
    if token is None or row["token_matches"]:
        return None
    if row["token_is_prefix"]:
        return AmbiguousToken(token=token, job_id=job_id)
    if len(token) < TOKEN_PREFIX and row["token"] is not None:
        return TokenTooShort(token=token, job_id=job_id, length=TOKEN_PREFIX)
    return StaleToken(token=token, job_id=job_id)


# --- step ------------------------------------------------------------------


def step(session, ref: JobRef | int, *, step_name: str, phase: str, value: str, token: str | None) -> dict:
    """One worker status update; never a read-modify-write."""
    job_id = resolve(session, ref)
    if phase not in rules.PHASES:
        raise UsageError(message=f"unknown phase {phase!r}: expected one of {', '.join(rules.PHASES)}")
    if value not in rules.PHASE_VALUES:
        raise UsageError(message=f"unknown status {value!r}: expected one of {', '.join(rules.PHASE_VALUES)}")
    for _ in range(CONCURRENT_RETRIES):
        row = session.one("step_update", job_id=job_id, step=step_name, phase=phase, value=value, token=token,
                          min_prefix=TOKEN_PREFIX)
        if row is None:
            raise JobNotFound(ref=job_id)
        if not row["step_allowed"]:
            # Any step of the job's document or of its kind: a worker may report a step the kind does not list.
            if row["kind"] is None:
                raise UsageError(message=f"unknown step {step_name!r}: job {job_id} has no kind and its document has no such step")
            raise UsageError(message=f"unknown step {step_name!r}: not in job {job_id}'s document, nor in kind "
                                     f"{row['kind']} ({', '.join(row['kind_steps'] or [])})")
        result = {"job_id": job_id, "step": step_name, "phase": phase, "status": value, "overall": row["overall"]}
        if row["changed"]:
            return {**result, "result": "updated", "previous": row["current_value"]}
        refused = token_refused(job_id, token, row)
        if refused is not None:
            raise refused
        if row["overall"] not in ("RUNNING", "FINISHED"):
            raise Conflict(message=f"job {job_id} is {rules.state_text(row['overall'])}: no run to update; nothing changed")
        if row["steps_type"] != "object":
            raise Conflict(message=f"job {job_id}: its status document's steps is {row['steps_type'] or 'missing'}, not an object; nothing changed")
        if row["step_type"] not in (None, "object"):
            raise Conflict(message=f"job {job_id}: step {step_name!r} is a {row['step_type']}, not an object; nothing changed")
        if row["current_value"] == value:
            return {**result, "result": "already", "previous": value}
    raise Busy(reason=f"job {job_id} kept changing while updating it")


# --- check -----------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    job: Job  # as last read; its completion is the verdict
    attempts: int
    retried: bool  # checked again after each wait of a backoff (--retry)

    @property
    def completion(self) -> rules.Completion:
        return self.job.completion

    @property
    def failure(self) -> NotFinished | None:
        """The error `check` exits with, after showing the steps, when the job is not finished."""
        completion = self.completion
        if completion.all_finished:
            return None
        given_up = f" after {self.attempts} check{'s' if self.attempts != 1 else ''}" if self.retried else ""
        stop = " (a phase failed: waiting cannot help)" if self.retried and completion.failed else ""
        return NotFinished(message=f"{self.job.label()} not finished{given_up}{stop}: {'; '.join(completion.reasons)}")


# on_retry(attempt, of how many checks, its completion, seconds until the next one)
OnRetry = Callable[[int, int, rules.Completion, float], None]


def check(session, ref: JobRef | int, *, backoff: tuple[float, ...] | None = None,
          on_retry: OnRetry = lambda attempt, checks, completion, wait: None, look=None) -> CheckResult:
    """Judge every step (checkJobCompletion); with ``backoff``, check again after each of its waits.
    With ``look`` (a broker's :class:`~etlctl.actions.peeking.QueueLook`), a job whose steps are all
    finished is not finished while a message of its run waits in one of its queues."""
    job_id = resolve(session, ref)
    if backoff is None:
        return CheckResult(_judged(load(session, job_id, ref), look), attempts=1, retried=False)
    job, _, attempts = _check_with_retry(session, job_id, backoff, on_retry, ref, look)
    return CheckResult(job, attempts, retried=True)


def _judged(job: Job, look) -> Job:
    return look.judged(job) if look is not None else job


def _check_with_retry(
    session, job_id: int, backoff: tuple[float, ...], on_retry: OnRetry, ref=None, look=None,
) -> tuple[Job, rules.Completion, int]:
    """Check, then again after each wait of ``backoff``; stop early on a failed phase."""
    import tenacity

    attempts = 0
    latest: list[Job] = []

    def attempt() -> rules.Completion:
        nonlocal attempts
        attempts += 1
        job = _judged(load(session, job_id, ref), look)
        latest[:] = [job]
        return job.completion

    def before_sleep(state: tenacity.RetryCallState) -> None:
        on_retry(state.attempt_number, len(backoff) + 1, state.outcome.result(), state.next_action.sleep)

    retrying = tenacity.Retrying(
        sleep=clock.sleep,
        wait=tenacity.wait_chain(*[tenacity.wait_fixed(s) for s in backoff]) if backoff else tenacity.wait_none(),
        stop=tenacity.stop_after_attempt(len(backoff) + 1),
        retry=tenacity.retry_if_result(lambda c: not c.all_finished and not c.failed),
        before_sleep=before_sleep,
        retry_error_callback=lambda state: state.outcome.result(),
    )
    completion = retrying(attempt)
    return latest[0], completion, attempts


# --- reset -----------------------------------------------------------------


@dataclass(frozen=True)
class ResetResult:
    job: Job
    row: dict | None  # the changed row; None when nothing needed doing
    overridden: tuple[str, ...] = ()
    dropped: tuple[document.Part, ...] = ()  # parts of the document a forced reset could not keep


# A forced reset moves a run (or what is left of one) back to READY: from these, and from any state
# etlctl does not know (a malformed document). READY and RATE_LIMIT_REACHED are no run to end.
NOT_A_RUN = ("READY", "RATE_LIMIT_REACHED")


def reset(session, ref: JobRef | int, *, force: bool) -> ResetResult:
    """FINISHED -> READY when the check passes; --force also from FAILED, RUNNING or a state etlctl
    does not know, and from any state when the document holds parts etlctl cannot read.

    One transaction: read, judge, then a write guarded on the run and on the
    very steps that were judged. A forced reset keeps every key it can keep;
    the parts etlctl did not read (nested too deep, too long) it cannot keep
    without keeping the job unreadable, so it drops them, guarded on the whole
    document as read, and says which.
    """
    job_id = resolve(session, ref)
    with session.transaction():
        job = load(session, job_id, ref)
        completion = job.completion
        overall = job.overall
        shown = rules.state_text(overall)
        if not force:
            if overall != "FINISHED":
                # Suggest --force only where it would reset the job (see the forced branch below).
                helps = overall not in NOT_A_RUN or bool(job.unread)
                hint = " (--force overrides)" if helps else (
                    ": schedule-next starts it once next_run passes" if overall == "RATE_LIMIT_REACHED" else "")
                raise Conflict(message=f"{job.label()} is {shown}, not FINISHED: nothing to reset{hint}")
            if not completion.all_finished:
                raise Conflict(message=f"{job.label()} is not finished: {'; '.join(completion.reasons)}; not reset (--force overrides)")
            overridden: tuple[str, ...] = ()
        else:
            if overall in NOT_A_RUN and not job.unread:
                if overall == "READY":
                    return ResetResult(job, None)
                raise Conflict(message=f"{job.label()} is {shown}: --force resets only FINISHED, FAILED or RUNNING jobs "
                                       "(or a malformed one)")
            overridden = tuple(
                ([f"overall was {shown}"] if overall != "FINISHED" else [])
                + [r for r in completion.reasons if not r.startswith("overall is")]
            )
        dropped = job.unread if force else ()
        found = guard(job.status, RUN_KEYS)
        whole = found is None or bool(dropped)
        expected, absent = (None, []) if whole else found
        transition = Transition(
            job_id=job.id, action=lifecycle.RESET, expected=expected, absent=absent,
            reason="forced reset" if force else "reset: all steps finished",
            steps_digest=job.steps_digest, check_steps=not force,
            status_digest=job.status_digest if whole else None, drop=dropped,
            from_state=_text(_doc(job.status).get("overall")), token=_text(job.token),
            # The reset clears error_message: the audit keeps what it said.
            details={"force": force, "overridden": list(overridden), "previous_error": job.error_message,
                     **({"dropped": [{"path": list(p.path), "reason": p.reason} for p in dropped]} if dropped else {})},
        )
        changed = apply(session, [transition])
        if not changed:
            raise Conflict(message=f"{job.label()} changed while resetting it (a worker or another etlctl); nothing changed, look again")
        return ResetResult(job, changed[0], overridden, dropped)


# --- the durable state machine: sweep (wait-and-reset: actions/wait_and_reset.py) ---


@dataclass(frozen=True)
class Step:
    """One job's turn in a sweep: what was decided and whether it took effect."""

    job: Job
    decision: lifecycle.Decision
    applied: dict | None


def sweep(session, timings: lifecycle.Timings, *, batch: int = 1000,
          on_batch: Callable[[list[Step]], None] = lambda steps: None, tenant_ids: list[int] | None = None,
          look=None) -> int:
    """One non-blocking pass over every FINISHED job (of ``tenant_ids``) that has something due.

    Works in batches of ``batch`` jobs, two statements each, so memory and
    round trips do not grow with the number of jobs in the database.
    Returns how many transitions took effect. With ``look``, a job about to be
    reset (or to start its cool-down) is judged again with what its queues
    hold, each queue scanned once per pass; when the broker cannot be reached
    such a job is left as it is (``look.unjudged``) for the next pass.
    """
    after, total = 0, 0
    while True:
        rows = session.all("sweep_batch", after_id=after, batch=batch, tenant_ids=tenant_ids,
                           max_wait=lifecycle.MAX_WAIT)
        if not rows:
            break
        jobs = [Job.from_row(row) for row in rows]
        decisions = [lifecycle.decide(j.status, j.rules, j.now, timings, j.finished_at) for j in jobs]
        if look is not None:
            jobs, decisions = look.rejudge(jobs, decisions, timings)
        todo = [transition_for(j, d) for j, d in zip(jobs, decisions) if d.writes]
        changed = {row["id"]: row for row in apply(session, todo, skip_locked=True)}
        total += len(changed)
        on_batch([Step(j, d, changed.get(j.id)) for j, d in zip(jobs, decisions) if d.writes or d.action == lifecycle.SKIP])
        after = rows[-1]["id"]
        if len(rows) < batch:
            break
    return total


@dataclass(frozen=True)
class SweepTick:
    locked: bool  # False: another sweep holds this database's tick lock; this one did nothing
    acted: int = 0  # transitions that took effect


def sweep_tick(session, timings: lifecycle.Timings, *, batch: int = 1000,
               on_batch: Callable[[list[Step]], None] = lambda steps: None, tenant: str | None = None,
               look=None) -> SweepTick:
    """`etlctl sweep [--tenant T]`: one :func:`sweep` under the per-database tick lock, so that a
    second sweep at the same moment returns at once. Correctness never depends on the lock.

    A sweep of one tenant takes a lock of its own: it must not make the whole sweep of the same
    minute skip every other tenant (nor wait for it)."""
    ids = tenant_ids(session, tenant)
    with session.tick_lock("sweep" if ids is None else f"sweep tenants {ids}") as taken:
        if not taken:
            return SweepTick(locked=False)
        return SweepTick(True, sweep(session, timings, batch=batch, on_batch=on_batch, tenant_ids=ids, look=look))
