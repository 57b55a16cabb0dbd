"""Completion rules: is every step of a job finished?

Pure functions over a job kind's step definitions and a status document; no
database, no clock. ``check``, ``reset``, ``sweep``, ``wait-and-reset``,
``status`` and ``why`` all decide through :func:`evaluate`, so the rules of
``etl-ui-reset-flow.md`` live here and only here.

Documents written by other programs may be messy (a missing ``steps`` key,
``null`` phases, unknown values). They are reported as ``missing`` or
``malformed`` verdicts, never repaired and never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

PHASES = ("extraction", "transform", "embedding")
PHASE_VALUES = ("idle", "running", "finished", "failed")
OVERALL_STATES = ("READY", "RUNNING", "FINISHED", "FAILED", "RATE_LIMIT_REACHED")

# How a kind's step may end (etlctl.kind_steps.rule).
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
MISSING = "missing"
MALFORMED = "malformed"
DONE_VERDICTS = (FINISHED, IDLE_ALLOWED)


@dataclass(frozen=True)
class StepRule:
    """One step of a job kind, as the kinds table defines it."""

    step: str
    position: int
    rule: str = MUST_FINISH
    display_name: str = ""


@dataclass(frozen=True)
class StepVerdict:
    step: str
    verdict: str
    phase: str | None  # the phase that decides the verdict, when one does
    detail: str

    @property
    def done(self) -> bool:
        return self.verdict in DONE_VERDICTS


@dataclass(frozen=True)
class Completion:
    all_finished: bool
    overall: object
    steps: tuple[StepVerdict, ...]
    reasons: tuple[str, ...]
    # A failed phase cannot finish by waiting: retries stop at once.
    failed: bool
    steps_status: dict = field(default_factory=dict)

    def first_blocker(self) -> StepVerdict | None:
        return next((s for s in self.steps if not s.done), None)


def rules_from_rows(rows: Sequence[Mapping] | None) -> tuple[StepRule, ...] | None:
    """Build step rules from kinds-table rows; None when the job has no kind."""
    if rows is None:
        return None
    return tuple(
        StepRule(
            step=row["step"],
            position=int(row["position"]),
            rule=row.get("rule", MUST_FINISH),
            display_name=row.get("display_name") or "",
        )
        for row in sorted(rows, key=lambda r: int(r["position"]))
    )


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


def rules_for_unknown_kind(status: object) -> tuple[StepRule, ...]:
    """A job of unknown kind: every step in its own document must finish."""
    steps = document_steps(status) or {}
    ordered = sorted(steps.items(), key=lambda item: _order_key(*item))
    return tuple(StepRule(step=name, position=n) for n, (name, _) in enumerate(ordered, 1))


def judge_step(rule: StepRule, body: object) -> StepVerdict:
    """The verdict on one step's phases under its rule."""
    name = rule.step
    if body is None:
        return StepVerdict(name, MISSING, None, f"{name}: missing from the status document")
    if not isinstance(body, Mapping):
        return StepVerdict(name, MALFORMED, None, f"{name}: is {json_type(body)}, not an object")
    values = {}
    for phase in PHASES:
        if phase not in body:
            return StepVerdict(name, MISSING, phase, f"{name}.{phase}: missing")
        value = body[phase]
        if value not in PHASE_VALUES:
            return StepVerdict(name, MALFORMED, phase, f"{name}.{phase}: unexpected value {_show(value)}")
        values[phase] = value
    for phase in PHASES:
        if values[phase] == "failed":
            return StepVerdict(name, FAILED, phase, f"{name}.{phase}: failed")
    if all(v == "finished" for v in values.values()):
        return StepVerdict(name, FINISHED, None, f"{name}: finished")
    if rule.rule == FINISHED_OR_IDLE and all(v == "idle" for v in values.values()):
        return StepVerdict(name, IDLE_ALLOWED, None, f"{name}: idle, which this step allows")
    for phase in PHASES:
        if values[phase] == "running":
            return StepVerdict(name, RUNNING, phase, f"{name}.{phase}: still running")
    if all(v == "idle" for v in values.values()):
        return StepVerdict(name, IDLE, "extraction", f"{name}: not started (all phases idle)")
    phase = next(p for p in PHASES if values[p] != "finished")
    return StepVerdict(name, MIXED, phase, f"{name}.{phase}: {values[phase]} while other phases finished")


def evaluate(rules: Sequence[StepRule] | None, status: object) -> Completion:
    """Decide whether a job is complete, as ``checkJobCompletion`` does.

    ``rules`` is None for a job whose kind is unknown.
    """
    overall = status.get("overall") if isinstance(status, Mapping) else None
    if rules is None:
        rules = rules_for_unknown_kind(status)
    steps = document_steps(status)
    reasons: list[str] = []
    if not isinstance(status, Mapping):
        reasons.append(f"the status document is {json_type(status)}, not an object")
    elif "steps" not in status:
        reasons.append("the status document has no steps")
    elif steps is None:
        reasons.append(f"steps is {json_type(status['steps'])}, not an object")

    verdicts = tuple(judge_step(rule, (steps or {}).get(rule.step)) for rule in rules)
    reasons.extend(v.detail for v in verdicts if not v.done)
    if not rules and not reasons:
        reasons.append("the status document has no steps to check")
    if overall != "FINISHED":
        reasons.insert(0, f"overall is {_show(overall)}, not FINISHED")

    return Completion(
        all_finished=not reasons,
        overall=overall,
        steps=verdicts,
        reasons=tuple(reasons),
        failed=any(v.verdict == FAILED for v in verdicts),
        steps_status=steps_status(status, rules),
    )


def steps_status(status: object, rules: Sequence[StepRule]) -> dict:
    """The ``steps_status`` object of the flow document: step -> its three phases."""
    steps = document_steps(status) or {}
    names = [r.step for r in rules] + sorted(n for n in steps if n not in {r.step for r in rules})
    out = {}
    for name in names:
        body = steps.get(name)
        if isinstance(body, Mapping):
            out[name] = {phase: body.get(phase) for phase in PHASES}
        else:
            out[name] = body
    return out


def ordered_step_names(rules: Sequence[StepRule] | None, status: object) -> list[str]:
    """Steps in display order: the kind's order first, then any others in the document."""
    known = [r.step for r in (rules or ())]
    extra = [n for n, _ in sorted((document_steps(status) or {}).items(), key=lambda i: _order_key(*i))]
    return known + [n for n in extra if n not in known]


def json_type(value: object) -> str:
    """A JSON value's type as messages name it: 'null', 'a number', 'an array', ..."""
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


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return f"{json_type(value)} ({value!r})"
