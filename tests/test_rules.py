"""The completion rules, table-driven, with no database."""

from __future__ import annotations

import pytest

from etlctl.core import rules
from etlctl.core.rules import FINISHED_OR_IDLE, KindStep, evaluate
from tests.helpers import GITHUB_STEPS, JIRA_STEPS

# The seeded etlctl.step_rules: a step without a row must finish.
RULES = {"jira_dev_status": FINISHED_OR_IDLE, GITHUB_STEPS[1]: FINISHED_OR_IDLE}
JIRA_KIND = tuple(KindStep(s, n) for n, s in enumerate([*JIRA_STEPS, "jira_sprint_reports"], 1))


def phases(e="finished", t="finished", m="finished"):
    return {"extraction": e, "transform": t, "embedding": m}


def doc(steps, overall="FINISHED"):
    return {"overall": overall, "steps": steps}


ALL_JIRA_FINISHED = {s: phases() for s in JIRA_STEPS}
IDLE = phases("idle", "idle", "idle")

CASES = [
    # (id, document, all_finished, {step: (verdict, deciding phase)})
    ("jira all finished", doc(ALL_JIRA_FINISHED), True, {s: ("finished", None) for s in JIRA_STEPS}),
    ("jira one phase running", doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(m="running")}), False,
     {"jira_dev_status": ("running", "embedding")}),
    ("jira_dev_status all idle is allowed", doc({**ALL_JIRA_FINISHED, "jira_dev_status": IDLE}), True,
     {"jira_dev_status": ("idle-allowed", None)}),
    ("another jira step idle is not", doc({**ALL_JIRA_FINISHED, JIRA_STEPS[2]: IDLE}), False,
     {JIRA_STEPS[2]: ("idle", "extraction")}),
    ("jira mixed finished/idle", doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases("finished", "idle", "idle")}), False,
     {"jira_dev_status": ("mixed", "transform")}),
    ("jira failed wins over running",
     doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases("running", "failed", "running")}), False,
     {"jira_dev_status": ("failed", "transform")}),
    ("a step the kind lists but the document lacks is not judged", doc({s: phases() for s in JIRA_STEPS[:3]}), True, {}),
    ("the fifth jira step is judged when present",
     doc({**ALL_JIRA_FINISHED, "jira_sprint_reports": phases(t="running")}), False,
     {"jira_sprint_reports": ("running", "transform")}),
    ("a missing phase counts as idle", doc({**ALL_JIRA_FINISHED, JIRA_STEPS[0]: {"extraction": "finished", "transform": "finished"}}),
     False, {JIRA_STEPS[0]: ("mixed", "embedding")}),
    ("missing phases of an idle-allowed step are idle", doc({**ALL_JIRA_FINISHED, "jira_dev_status": {"order": 4}}), True,
     {"jira_dev_status": ("idle-allowed", None)}),
    ("null is not idle", doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases("idle", None, "idle")}), False,
     {"jira_dev_status": ("malformed", "transform")}),
    ("values compare exactly", doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(e="FINISHED")}), False,
     {"jira_dev_status": ("malformed", "extraction")}),
    ("numeric phase value", doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(e=1)}), False,
     {"jira_dev_status": ("malformed", "extraction")}),
    ("step is a string", doc({**ALL_JIRA_FINISHED, "jira_dev_status": "finished"}), False,
     {"jira_dev_status": ("malformed", None)}),
    ("step is null", doc({**ALL_JIRA_FINISHED, "jira_dev_status": None}), False, {"jira_dev_status": ("malformed", None)}),
    ("an unknown step is judged", doc({**ALL_JIRA_FINISHED, "extra": phases(e="running")}), False,
     {"extra": ("running", "extraction")}),
    ("an unknown step all idle is not finished", doc({**ALL_JIRA_FINISHED, "extra": IDLE}), False,
     {"extra": ("idle", "extraction")}),
    ("github both finished", doc({s: phases() for s in GITHUB_STEPS}), True, {GITHUB_STEPS[1]: ("finished", None)}),
    ("github PRs all idle", doc({GITHUB_STEPS[0]: phases(), GITHUB_STEPS[1]: IDLE}), True,
     {GITHUB_STEPS[1]: ("idle-allowed", None)}),
    ("github PRs mixed", doc({GITHUB_STEPS[0]: phases(), GITHUB_STEPS[1]: phases("finished", "idle", "idle")}), False,
     {GITHUB_STEPS[1]: ("mixed", "transform")}),
    ("github repositories idle is not allowed", doc({GITHUB_STEPS[0]: IDLE, GITHUB_STEPS[1]: IDLE}), False,
     {GITHUB_STEPS[0]: ("idle", "extraction"), GITHUB_STEPS[1]: ("idle-allowed", None)}),
    ("github PRs absent", doc({GITHUB_STEPS[0]: phases()}), True, {}),
    ("no steps is finished", doc({}), True, {}),
    ("steps key missing is finished", {"overall": "FINISHED"}, True, {}),
    ("steps is a string", {"overall": "FINISHED", "steps": "oops"}, False, {}),
    ("steps is a list", {"overall": "FINISHED", "steps": [1, 2]}, False, {}),
    ("steps is null", {"overall": "FINISHED", "steps": None}, False, {}),
    ("document is not an object", ["overall"], False, {}),
    ("overall RUNNING with all finished", doc(ALL_JIRA_FINISHED, overall="RUNNING"), False, {}),
    ("overall in lower case", doc(ALL_JIRA_FINISHED, overall="finished"), False, {}),
    ("overall unknown value", doc(ALL_JIRA_FINISHED, overall="PAUSED"), False, {}),
    ("overall missing", {"steps": ALL_JIRA_FINISHED}, False, {}),
]


@pytest.mark.parametrize(("status", "expected", "verdicts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate(status, expected, verdicts):
    completion = evaluate(RULES, status, JIRA_KIND)
    assert completion.all_finished is expected
    assert bool(completion.reasons) is (not expected)
    by_step = {v.step: v for v in completion.steps}
    present = rules.document_steps(status) or {}
    assert set(by_step) == set(present)  # every step of the document, and only those
    for step, (verdict, phase) in verdicts.items():
        assert (by_step[step].verdict, by_step[step].phase) == (verdict, phase), by_step[step]


def test_the_kind_never_decides_what_is_judged():
    four_steps = doc(ALL_JIRA_FINISHED)
    assert evaluate(RULES, four_steps, JIRA_KIND).all_finished
    assert evaluate(RULES, four_steps, None).all_finished
    assert evaluate(RULES, four_steps, (KindStep("something_else", 1),)).all_finished


def test_rate_limited_reads_as_rate_limit_reached():
    assert rules.normal_overall("RATE_LIMITED") == "RATE_LIMIT_REACHED"
    assert rules.normal_overall("READY") == "READY" and rules.normal_overall(None) is None
    assert evaluate(RULES, doc({}, overall="RATE_LIMITED")).reasons == ("overall is 'RATE_LIMIT_REACHED', not FINISHED",)


def test_failed_phase_marks_the_completion_failed_so_retries_stop():
    status = doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(m="failed")})
    completion = evaluate(RULES, status)
    assert completion.failed and not completion.all_finished
    assert "jira_dev_status.embedding: failed" in completion.reasons


def test_reason_names_the_overall_state_first():
    completion = evaluate(RULES, doc(ALL_JIRA_FINISHED, overall="RUNNING"))
    assert completion.reasons == ("overall is 'RUNNING', not FINISHED",)


def test_steps_status_has_the_flow_documents_shape_in_kind_order():
    status = doc({"jira_dev_status": phases(), "zzz": phases(e="idle"), "jira_projects_and_issue_types": phases(e="running")})
    completion = evaluate(RULES, status, JIRA_KIND)
    assert list(completion.steps_status) == ["jira_projects_and_issue_types", "jira_dev_status", "zzz"]
    assert completion.steps_status["jira_projects_and_issue_types"] == phases(e="running")
    assert [v.step for v in completion.steps] == list(completion.steps_status)


def test_steps_outside_the_kind_follow_their_order_key():
    status = doc({"b": {"order": 2, **phases()}, "a": {"order": 1, **phases(e="running")}, "c": phases()})
    assert rules.ordered_step_names(None, status) == ["a", "b", "c"]
    assert evaluate({}, status).first_blocker().step == "a"


def test_kind_steps_from_rows_sorts_by_position():
    rows = [{"step": "b", "position": 2, "chain": True}, {"step": "a", "position": 1, "display_name": "A"}]
    assert rules.kind_steps_from_rows(rows) == (KindStep("a", 1, "A", False), KindStep("b", 2, "", True))
    assert rules.kind_steps_from_rows(None) is None
    assert rules.step_rules_from({"x": FINISHED_OR_IDLE}) == {"x": FINISHED_OR_IDLE} and rules.step_rules_from(None) == {}
    assert rules.rule_of("x", {"x": FINISHED_OR_IDLE}) == FINISHED_OR_IDLE and rules.rule_of("y", {}) == "finished"
