"""The reset flow as a durable state machine: pure functions over a status
document and a time.

After a job FINISHES, the flow document's UI waits ``delay``, checks, retries
the check after each wait of ``backoff``, counts down ``cooldown`` and resets
the job to READY. etlctl keeps where it is in that flow inside the status
document itself, so a killed ``wait-and-reset`` or the next ``sweep`` carries on
from there:

    reset_stage     "check" | "cooldown" | "gave_up"   (absent: not started)
    reset_deadline  ISO time of the next check, or of the end of the cool-down
    reset_attempt   number of the check due at the deadline (0 = the first)
    reset_gave_up_at ISO time the flow gave up (stage "gave_up")
    reset_token     the run these keys belong to (its token)

:func:`decide` turns (document, now) into the one next :class:`Decision`. It
never writes; the caller applies the decision with a guarded statement that
only matches while the document still holds the state the decision was made
on, so concurrent deciders cannot both act.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from etlctl.core.humanize import duration
from etlctl.core.rules import Completion, evaluate, show

DEFAULT_DELAY = 30.0
DEFAULT_BACKOFF = (30.0, 60.0, 180.0, 300.0)
DEFAULT_COOLDOWN = 30.0
# The longest single wait of the reset flow (the delay, one backoff step, or the
# cool-down): longer flags are refused, and a reset_deadline further ahead than
# this cannot come from any legal run, so it is malformed, never waited for.
MAX_WAIT = 86400.0

# Reset stages stored in reset_stage.
NOT_STARTED = "none"
CHECK = "check"
COOLDOWN = "cooldown"
GAVE_UP = "gave_up"

# Decisions.
WAIT = "wait"  # nothing to write; the next step is due at `deadline`
SCHEDULE = "schedule"  # write the first check's deadline (job finished without one)
RETRY = "retry"  # the check failed; write the next check's deadline
START_COOLDOWN = "cooldown"  # the check passed; write the end of the cool-down
RESET = "reset"  # FINISHED -> READY
GIVE_UP = "give_up"  # record the error, stay FINISHED
SKIP = "skip"  # not this flow's business (not FINISHED, gave up, malformed)

WRITES = (SCHEDULE, RETRY, START_COOLDOWN, RESET, GIVE_UP)

RESET_KEYS = ("reset_stage", "reset_deadline", "reset_attempt", "reset_gave_up_at", "reset_token")


@dataclass(frozen=True)
class Timings:
    delay: float = DEFAULT_DELAY
    backoff: tuple[float, ...] = DEFAULT_BACKOFF
    cooldown: float = DEFAULT_COOLDOWN

    @property
    def checks(self) -> int:
        """How many checks the flow makes before giving up."""
        return len(self.backoff) + 1

    def patience(self) -> float:
        """Seconds from FINISHED to the latest possible reset or give-up."""
        return self.delay + sum(self.backoff) + self.cooldown


@dataclass(frozen=True)
class ResetState:
    stage: str
    deadline: datetime | None
    attempt: int
    gave_up_at: datetime | None = None
    problem: str | None = None  # set when the reset keys are malformed


@dataclass(frozen=True)
class Decision:
    action: str
    state: ResetState  # the state the decision was made on: the write's guard
    reason: str
    deadline: datetime | None = None  # the deadline to wait for or to write
    attempt: int = 0
    stage: str = NOT_STARTED
    completion: Completion | None = None

    @property
    def writes(self) -> bool:
        return self.action in WRITES


# The largest reset_attempt read as a count: the existing reset scheduler adds one every five minutes
# at most, so a million is years of retrying; anything larger is not a count any writer made (and its
# successor must still fit a PostgreSQL integer).
MAX_ATTEMPT = 1_000_000
# A run token is a UUID; the existing system's are too. A longer one is not a token any writer made.
MAX_TOKEN_LENGTH = 255


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time with an offset, as etlctl and the existing system write it."""
    if not isinstance(value, str):
        raise ValueError
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError
    try:
        parsed.astimezone(timezone.utc)  # year 1 at +14:00 is before the start of Python's calendar
    except OverflowError:
        raise ValueError from None
    return parsed


def reset_state(status: object, now: datetime | None = None) -> ResetState:
    """Where the reset flow of a FINISHED job stands, read from its document at ``now``.

    etlctl's own keys are checked on the way (type and range): a value no
    writer of the flow makes is a ``problem`` (the job is malformed, and the
    flow leaves it to a person), never a crash and never a guess. Given ``now``,
    a deadline further ahead than :data:`MAX_WAIT` is such a value: no legal
    wait wrote it, and waiting for it would be waiting forever.

    Keys left over from an earlier run are no state at all: etlctl writes the
    run's token as reset_token with every reset key, and the existing system's
    own reset and completion keep keys they do not know. Likewise a stage
    without a deadline means the existing system cleared its reset_deadline:
    nothing is pending.
    """
    state = _read_reset_state(status, now)
    doc = status if isinstance(status, Mapping) else {}
    if state.problem is None and "reset_token" in doc and doc.get("reset_token") != doc.get("token"):
        return ResetState(NOT_STARTED, None, 0)
    return state


def _problem(text: str) -> ResetState:
    return ResetState(NOT_STARTED, None, 0, problem=text)


def _read_reset_state(status: object, now: datetime | None) -> ResetState:
    doc = status if isinstance(status, Mapping) else {}
    stage = doc.get("reset_stage")
    raw_deadline = doc.get("reset_deadline")
    raw_attempt = doc.get("reset_attempt")

    for key in ("token", "reset_token"):
        value = doc.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TOKEN_LENGTH):
            return _problem(f"{key} is {show(value)}, not a run token")

    attempt = 0
    if raw_attempt is not None:
        if isinstance(raw_attempt, bool) or not isinstance(raw_attempt, int) or not 0 <= raw_attempt <= MAX_ATTEMPT:
            return _problem(f"reset_attempt is {show(raw_attempt)}, not a count from 0 to {MAX_ATTEMPT:,}")
        attempt = raw_attempt

    if stage is not None and stage not in (CHECK, COOLDOWN, GAVE_UP):
        return _problem(f"reset_stage is {show(stage)}")

    raw_gave_up = doc.get("reset_gave_up_at")
    gave_up_at = None
    if raw_gave_up is not None:
        try:
            gave_up_at = parse_time(raw_gave_up)
        except ValueError:
            return _problem(f"reset_gave_up_at {show(raw_gave_up)} is not an ISO time with offset")

    if stage == GAVE_UP:
        return ResetState(GAVE_UP, None, attempt, gave_up_at=gave_up_at)

    if raw_deadline is None:
        return ResetState(NOT_STARTED, None, 0)
    try:
        deadline = parse_time(raw_deadline)
    except ValueError:
        return _problem(f"reset_deadline {show(raw_deadline)} is not an ISO time with offset")
    if now is not None and (deadline - now).total_seconds() > MAX_WAIT:
        return _problem(f"reset_deadline {show(raw_deadline)} is further ahead than the longest wait of the "
                        f"flow ({duration(MAX_WAIT)}): no run wrote it")
    # The existing system writes reset_deadline and reset_attempt without a stage: a pending check.
    return ResetState(stage or CHECK, deadline, attempt)


def decide(
    status: object,
    rules: Mapping[str, str] | None,
    now: datetime,
    timings: Timings,
    finished_at: datetime | None = None,
    queued: Sequence[str] = (),
) -> Decision:
    """The next step of the reset flow for one job at time ``now``; ``rules`` are its step rules,
    ``queued`` what a look at the broker's queues found (see :func:`etlctl.core.rules.evaluate`)."""
    doc = status if isinstance(status, Mapping) else {}
    state = reset_state(status, now)
    overall = doc.get("overall")
    if overall != "FINISHED":
        return Decision(SKIP, state, f"overall is {show(overall) if 'overall' in doc else 'missing'}, not FINISHED")
    if state.problem:
        return Decision(SKIP, state, f"malformed reset state: {state.problem}")
    if state.stage == GAVE_UP:
        return Decision(SKIP, state, "the reset gave up; reset it by hand (etlctl reset JOB)")

    if state.stage == NOT_STARTED:
        # Finished without a pending reset (the existing embedding worker does
        # that): the first check is due `delay` after it finished.
        deadline = after(known(finished_at) or now, timings.delay)
        if deadline > now:
            return Decision(SCHEDULE, state, "first check scheduled", deadline, 0, CHECK)
        effective = ResetState(CHECK, deadline, 0)
    else:
        effective = state
        if state.deadline is not None and state.deadline > now:
            return Decision(WAIT, state, _waiting_for(state, timings), state.deadline, state.attempt, state.stage)

    completion = evaluate(rules, status, queued=queued)
    attempt = effective.attempt
    label = f"check {attempt + 1} of {timings.checks}"

    if effective.stage == COOLDOWN and completion.all_finished:
        return Decision(RESET, state, "cool-down over, all steps finished", completion=completion, attempt=attempt)
    if completion.all_finished:
        if timings.cooldown <= 0:
            return Decision(RESET, state, f"{label}: all steps finished", completion=completion, attempt=attempt)
        deadline = after(now, timings.cooldown)
        return Decision(START_COOLDOWN, state, f"{label}: all steps finished", deadline, attempt, COOLDOWN, completion)

    blocker = "; ".join(completion.reasons) or "not finished"
    if completion.failed:
        return Decision(GIVE_UP, state, f"gave up: {blocker}", attempt=attempt, stage=GAVE_UP, completion=completion)
    if attempt >= len(timings.backoff):
        return Decision(
            GIVE_UP, state, f"gave up after {attempt + 1} checks: {blocker}",
            attempt=attempt, stage=GAVE_UP, completion=completion,
        )
    deadline = after(now, timings.backoff[attempt])
    return Decision(RETRY, state, f"{label} not finished: {blocker}", deadline, attempt + 1, CHECK, completion)


def _waiting_for(state: ResetState, timings: Timings) -> str:
    if state.stage == COOLDOWN:
        return "cool-down before the reset"
    return f"check {state.attempt + 1} of {timings.checks}"


def after(moment: datetime, seconds: float) -> datetime:
    """``moment`` plus ``seconds`` of real time, in moment's zone.

    Python adds a timedelta to a zone-aware time on its wall clock, which is an
    hour off across a daylight-saving change; so the sum is made in UTC. A
    moment at the end of the calendar (a database 'infinity') stays where it is.
    """
    try:
        return (moment.astimezone(timezone.utc) + timedelta(seconds=seconds)).astimezone(moment.tzinfo)
    except OverflowError:
        return moment


def known(moment: datetime | None) -> datetime | None:
    """None for the ends of the calendar (how etlctl loads 'infinity' and '-infinity')."""
    if moment is None or moment.year in (1, 9999):
        return None
    return moment
