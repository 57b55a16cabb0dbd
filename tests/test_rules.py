"""The completion rules, table-driven, with no database."""

from __future__ import annotations

import pytest

from etlctl.core import rules
from etlctl.core.rules import FINISHED_OR_IDLE, MUST_FINISH, StepRule, evaluate
from tests.helpers import GITHUB_STEPS, JIRA_STEPS

JIRA = tuple(StepRule(s, n, MUST_FINISH) for n, s in enumerate(JIRA_STEPS, 1))
GITHUB = (StepRule(GITHUB_STEPS[0], 1, MUST_FINISH), StepRule(GITHUB_STEPS[1], 2, FINISHED_OR_IDLE))


def phases(e="finished", t="finished", m="finished"):
    return {"extraction": e, "transform": t, "embedding": m}


def doc(steps, overall="FINISHED"):
    return {"overall": overall, "steps": steps}


ALL_JIRA_FINISHED = {s: phases() for s in JIRA_STEPS}

CASES = [
    # (id, kind rules, document, all_finished, {step: (verdict, deciding phase)})
    ("jira all finished", JIRA, doc(ALL_JIRA_FINISHED), True, {s: ("finished", None) for s in JIRA_STEPS}),
    ("jira one phase running", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(m="running")}), False,
     {"jira_dev_status": ("running", "embedding")}),
    ("jira one step idle", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases("idle", "idle", "idle")}), False,
     {"jira_dev_status": ("idle", "extraction")}),
    ("jira mixed finished/idle", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases("finished", "idle", "idle")}), False,
     {"jira_dev_status": ("mixed", "transform")}),
    ("jira failed wins over running", JIRA,
     doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases("running", "failed", "running")}), False,
     {"jira_dev_status": ("failed", "transform")}),
    ("jira missing step", JIRA, doc({s: phases() for s in JIRA_STEPS[:3]}), False,
     {"jira_dev_status": ("missing", None)}),
    ("jira missing phase", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": {"extraction": "finished", "transform": "finished"}}),
     False, {"jira_dev_status": ("missing", "embedding")}),
    ("jira null phase", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(t=None)}), False,
     {"jira_dev_status": ("malformed", "transform")}),
    ("jira unknown phase value", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(e="done")}), False,
     {"jira_dev_status": ("malformed", "extraction")}),
    ("jira numeric phase value", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(e=1)}), False,
     {"jira_dev_status": ("malformed", "extraction")}),
    ("jira step is a string", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": "finished"}), False,
     {"jira_dev_status": ("malformed", None)}),
    ("jira step is null", JIRA, doc({**ALL_JIRA_FINISHED, "jira_dev_status": None}), False,
     {"jira_dev_status": ("missing", None)}),
    ("jira extra step ignored", JIRA, doc({**ALL_JIRA_FINISHED, "extra": phases(e="running")}), True, {}),
    ("github both finished", GITHUB, doc({s: phases() for s in GITHUB_STEPS}), True,
     {GITHUB_STEPS[1]: ("finished", None)}),
    ("github PRs all idle", GITHUB, doc({GITHUB_STEPS[0]: phases(), GITHUB_STEPS[1]: phases("idle", "idle", "idle")}), True,
     {GITHUB_STEPS[1]: ("idle-allowed", None)}),
    ("github PRs mixed", GITHUB, doc({GITHUB_STEPS[0]: phases(), GITHUB_STEPS[1]: phases("finished", "idle", "idle")}), False,
     {GITHUB_STEPS[1]: ("mixed", "transform")}),
    ("github PRs running", GITHUB, doc({GITHUB_STEPS[0]: phases(), GITHUB_STEPS[1]: phases("finished", "running", "idle")}), False,
     {GITHUB_STEPS[1]: ("running", "transform")}),
    ("github repositories idle is not allowed", GITHUB,
     doc({GITHUB_STEPS[0]: phases("idle", "idle", "idle"), GITHUB_STEPS[1]: phases("idle", "idle", "idle")}), False,
     {GITHUB_STEPS[0]: ("idle", "extraction"), GITHUB_STEPS[1]: ("idle-allowed", None)}),
    ("github PRs missing", GITHUB, doc({GITHUB_STEPS[0]: phases()}), False, {GITHUB_STEPS[1]: ("missing", None)}),
    ("unknown kind all finished", None, doc({"only": phases(), "second": phases()}), True, {"only": ("finished", None)}),
    ("unknown kind one running", None, doc({"only": phases(), "second": phases(e="running")}), False,
     {"second": ("running", "extraction")}),
    ("unknown kind idle is not finished", None, doc({"only": phases("idle", "idle", "idle")}), False,
     {"only": ("idle", "extraction")}),
    ("unknown kind with no steps", None, doc({}), False, {}),
    ("steps key missing", JIRA, {"overall": "FINISHED"}, False, {s: ("missing", None) for s in JIRA_STEPS}),
    ("steps is a string", JIRA, {"overall": "FINISHED", "steps": "oops"}, False, {s: ("missing", None) for s in JIRA_STEPS}),
    ("steps is a list", JIRA, {"overall": "FINISHED", "steps": [1, 2]}, False, {JIRA_STEPS[0]: ("missing", None)}),
    ("steps is null", None, {"overall": "FINISHED", "steps": None}, False, {}),
    ("document is not an object", JIRA, ["overall"], False, {JIRA_STEPS[0]: ("missing", None)}),
    ("overall RUNNING with all finished", JIRA, doc(ALL_JIRA_FINISHED, overall="RUNNING"), False, {}),
    ("overall unknown value", JIRA, doc(ALL_JIRA_FINISHED, overall="PAUSED"), False, {}),
]


@pytest.mark.parametrize(("rules_", "status", "expected", "verdicts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate(rules_, status, expected, verdicts):
    completion = evaluate(rules_, status)
    assert completion.all_finished is expected
    assert bool(completion.reasons) is (not expected)
    by_step = {v.step: v for v in completion.steps}
    for step, (verdict, phase) in verdicts.items():
        assert (by_step[step].verdict, by_step[step].phase) == (verdict, phase), by_step[step]


def test_failed_phase_marks_the_completion_failed_so_retries_stop():
    status = doc({**ALL_JIRA_FINISHED, "jira_dev_status": phases(m="failed")})
    completion = evaluate(JIRA, status)
    assert completion.failed and not completion.all_finished
    assert "jira_dev_status.embedding: failed" in completion.reasons


def test_reason_names_the_overall_state_first():
    completion = evaluate(JIRA, doc(ALL_JIRA_FINISHED, overall="RUNNING"))
    assert completion.reasons == ("overall is 'RUNNING', not FINISHED",)


def test_steps_status_has_the_flow_documents_shape_in_kind_order():
    status = doc({"jira_dev_status": phases(), "zzz": phases(e="idle"), "jira_projects_and_issue_types": phases(e="running")})
    completion = evaluate(JIRA, status)
    assert list(completion.steps_status) == [*JIRA_STEPS, "zzz"]
    assert completion.steps_status["jira_projects_and_issue_types"] == phases(e="running")
    assert completion.steps_status["jira_statuses_and_relationships"] is None


def test_unknown_kind_steps_follow_their_order_key():
    status = doc({"b": {"order": 2, **phases()}, "a": {"order": 1, **phases(e="running")}, "c": phases()})
    assert [r.step for r in rules.rules_for_unknown_kind(status)] == ["a", "b", "c"]
    assert evaluate(None, status).first_blocker().step == "a"


def test_rules_from_rows_sorts_by_position():
    rows = [{"step": "b", "position": 2, "rule": "finished"}, {"step": "a", "position": 1, "rule": "finished_or_idle"}]
    assert [(r.step, r.rule) for r in rules.rules_from_rows(rows)] == [("a", "finished_or_idle"), ("b", "finished")]
    assert rules.rules_from_rows(None) is None
