"""Completion rules: is every step of a job finished?

Pure functions over a status document and the per-step rules; no database,
no clock. ``check``, ``reset``, ``sweep``, ``wait-and-reset``, ``status`` and
``why`` all decide through :func:`evaluate`, so the rule lives here and only
here. It is the existing system's check-completion endpoint
(``existing-system-contract.md`` §4):

- only a job whose ``overall`` is FINISHED can be finished;
- every step **present in the document** is judged, known or not; a job
  kind's step list decides what a new run gets, never what is judged, so an
  older 4-step Jira document is judged on its own four steps;
- a missing phase key counts as ``idle``; values are compared exactly
  (``FINISHED`` is not ``finished``, ``null`` is not ``idle``);
- a step passes when its three phases are ``finished``, or, for a step whose
  rule (``etlctl.step_rules``, by step name) is ``finished_or_idle``, when
  all three are ``idle``;
- a document with no steps (no ``steps`` key, or an empty object) is finished.

Documents written by other programs may be messy. A value the rule does not
know is simply "not finished", and reported as ``malformed`` in the reasons
(the real endpoint fails on a ``steps`` or a step that is not an object: its
job is never finished either). Never repaired, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from etlctl.core import document

PHASES = ("extraction", "transform", "embedding")
PHASE_VALUES = ("idle", "running", "finished", "failed")
OVERALL_STATES = ("READY", "RUNNING", "FINISHED", "FAILED", "RATE_LIMIT_REACHED")
# The existing workers write this spelling when rate limited (the table's CHECK
# refuses it, but a database without that constraint keeps it): read as RATE_LIMIT_REACHED.
RATE_LIMITED_ALIASES = {"RATE_LIMITED": "RATE_LIMIT_REACHED"}

# How a step may end (etlctl.step_rules.rule); a step without a row must finish.
MUST_FINISH = "finished"
FINISHED_OR_IDLE = "finished_or_idle"
STEP_RULES = (MUST_FINISH, FINISHED_OR_IDLE)

# Verdicts of one step. The first two let the job complete.
FINISHED = "finished"
IDLE_ALLOWED = "idle-allowed"
RUNNING = "running"
IDLE = "idle"
MIXED = "mixed"
FAILED = "failed"
MALFORMED = "malformed"
DONE_VERDICTS = (FINISHED, IDLE_ALLOWED)


def state_text(overall: object) -> str:
    """An overall state in a sentence ("job 7 is FINISHED"), whatever the document holds there."""
    if isinstance(overall, str):
        return overall if overall.isascii() and overall.replace("_", "").isalnum() else show(overall)
    if overall is None:
        return "in no state (its status has no overall)"
    return f"in no state etlctl knows (overall is {show(overall)})"


def normal_overall(value: object) -> object:
    """The overall state as etlctl reads it: RATE_LIMITED is RATE_LIMIT_REACHED."""
    return RATE_LIMITED_ALIASES.get(value, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class KindStep:
    """One step of a job kind (etlctl.kind_steps): what a new run of the kind gets."""

    step: str
    position: int
    display_name: str = ""
    chain: bool = False  # schedule-next may queue it when the step before has finished


@dataclass(frozen=True)
class StepVerdict:
    step: str
    verdict: str
    phase: str | None  # the phase that decides the verdict, when one does
    detail: str
    rule: str = MUST_FINISH

    @property
    def done(self) -> bool:
        return self.verdict in DONE_VERDICTS


@dataclass(frozen=True)
class Completion:
    all_finished: bool
    overall: object
    steps: tuple[StepVerdict, ...]  # one per step of the document, in display order
    reasons: tuple[str, ...]
    # A failed phase cannot finish by waiting: retries stop at once.
    failed: bool
    steps_status: dict = field(default_factory=dict)

    def first_blocker(self) -> StepVerdict | None:
        return next((s for s in self.steps if not s.done), None)


def kind_steps_from_rows(rows: Sequence[Mapping] | None) -> tuple[KindStep, ...] | None:
    """A kind's steps from kinds-table rows, in order; None when the job has no kind."""
    if rows is None:
        return None
    return tuple(
        KindStep(step=row["step"], position=int(row["position"]), display_name=row.get("display_name") or "",
                 chain=bool(row.get("chain", False)))
        for row in sorted(rows, key=lambda r: int(r["position"]))
    )


def step_rules_from(value: Mapping | None) -> dict[str, str]:
    """Step name -> rule, as job_row hands them over (only the rows that exist)."""
    return {str(step): str(rule) for step, rule in (value or {}).items()}


def rule_of(step: str, step_rules: Mapping[str, str] | None) -> str:
    return (step_rules or {}).get(step, MUST_FINISH)


def document_steps(status: object) -> Mapping | None:
    """The ``steps`` object of a status document, or None when it is not an object."""
    if not isinstance(status, Mapping):
        return None
    steps = status.get("steps")
    return steps if isinstance(steps, Mapping) else None


def _order_key(name: str, body: object) -> tuple:
    order = body.get("order") if isinstance(body, Mapping) else None
    numeric = isinstance(order, (int, float)) and not isinstance(order, bool)
    return (0 if numeric else 1, order if numeric else 0, name)


def judge_step(name: str, rule: str, body: object) -> StepVerdict:
    """The verdict on one step of the document under its rule."""
    if not isinstance(body, Mapping):
        return StepVerdict(name, MALFORMED, None, f"{name}: is {json_type(body)}, not an object", rule)
    # A phase the document does not have has not started: idle (the real endpoint's default).
    values = {phase: body.get(phase, "idle") for phase in PHASES}
    for phase in PHASES:
        if values[phase] not in PHASE_VALUES or not isinstance(values[phase], str):
            return StepVerdict(name, MALFORMED, phase, f"{name}.{phase}: unexpected value {_show(values[phase])}", rule)
    for phase in PHASES:
        if values[phase] == "failed":
            return StepVerdict(name, FAILED, phase, f"{name}.{phase}: failed", rule)
    if all(v == "finished" for v in values.values()):
        return StepVerdict(name, FINISHED, None, f"{name}: finished", rule)
    if rule == FINISHED_OR_IDLE and all(v == "idle" for v in values.values()):
        return StepVerdict(name, IDLE_ALLOWED, None, f"{name}: idle, which this step allows", rule)
    for phase in PHASES:
        if values[phase] == "running":
            return StepVerdict(name, RUNNING, phase, f"{name}.{phase}: still running", rule)
    if all(v == "idle" for v in values.values()):
        return StepVerdict(name, IDLE, "extraction", f"{name}: not started (all phases idle)", rule)
    phase = next(p for p in PHASES if values[p] != "finished")
    return StepVerdict(name, MIXED, phase, f"{name}.{phase}: {values[phase]} while other phases finished", rule)


def evaluate(step_rules: Mapping[str, str] | None, status: object,
             kind_steps: Sequence[KindStep] | None = None, queued: Sequence[str] = ()) -> Completion:
    """Decide whether a job is complete, as the check-completion endpoint does.

    ``step_rules`` maps a step name to its rule (a step without one must
    finish); ``kind_steps`` only orders the verdicts for display. ``queued``
    is what a look at the broker found, as the existing reset scheduler looks:
    one reason per queue where a message of the run still waits (or may
    wait); any makes the job not finished, though not failed (waiting helps).
    """
    overall = normal_overall(status.get("overall")) if isinstance(status, Mapping) else None
    steps = document_steps(status)
    reasons: list[str] = []
    if not isinstance(status, Mapping):
        reasons.append(f"the status document is {json_type(status)}, not an object")
    elif "steps" in status and steps is None:
        reasons.append(f"steps is {json_type(status['steps'])}, not an object")

    names = [n for n in ordered_step_names(kind_steps, status) if steps is not None and n in steps]
    verdicts = tuple(judge_step(name, rule_of(name, step_rules), steps[name]) for name in names)
    reasons.extend(v.detail for v in verdicts if not v.done)
    reasons.extend(queued)
    if overall != "FINISHED":
        reasons.insert(0, f"overall is {_show(overall)}, not FINISHED")

    return Completion(
        all_finished=not reasons,
        overall=overall,
        steps=verdicts,
        reasons=tuple(reasons),
        failed=any(v.verdict == FAILED for v in verdicts),
        steps_status=steps_status(status, names),
    )


def steps_status(status: object, names: Sequence[str]) -> dict:
    """The ``steps_status`` object of the flow document: each step of the document -> its three phases."""
    steps = document_steps(status) or {}
    out = {}
    for name in names:
        body = steps.get(name)
        out[name] = {phase: body.get(phase) for phase in PHASES} if isinstance(body, Mapping) else body
    return out


def ordered_step_names(kind_steps: Sequence[KindStep] | None, status: object) -> list[str]:
    """Steps in display order: the kind's steps first (in its order), then the document's
    others by their ``order`` key, then name."""
    known = [s.step for s in (kind_steps or ())]
    extra = [n for n, _ in sorted((document_steps(status) or {}).items(), key=lambda i: _order_key(*i))]
    return known + [n for n in extra if n not in known]


def json_type(value: object) -> str:
    """A JSON value's type as messages name it: 'null', 'a number', 'an array', ..."""
    if isinstance(value, document.Unreadable):
        return f"unreadable ({value.reason})"
    if isinstance(value, document.BigNumber):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def show(value: object, limit: int = 60) -> str:
    """A value from a document in a message: quoted if text, typed if not, never longer than about ``limit``."""
    if value is None:
        return "null"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 1] + "…" + text[0]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and len(str(value)) > limit:
        return f"a number of {len(str(value))} digits"
    kind = json_type(value)
    if isinstance(value, (int, float, document.BigNumber)):
        return f"{kind} ({value})"
    if isinstance(value, document.Unreadable):
        return kind
    try:  # as JSON, the document's own language (null, not None)
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):
        return kind
    return kind if len(text) > limit else f"{kind} ({text})"


_show = show
