"""etlctl's completion verdict against a reference of the existing check-completion endpoint.

The reference below is written from existing-system-contract.md §4 alone, not from
etlctl's code; etlctl decides with the step rules its schema seeds (read from the
template database). Hypothesis draws documents of the real shape: subsets and supersets
of the real steps, unknown steps, names in odd case, missing phases, values in odd
case, null values, a missing `steps` key, other overall states.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from etlctl.core import rules
from tests.helpers import admin_connect

PHASES = ("extraction", "transform", "embedding")

# --- the reference, from the contract's text -----------------------------------------------------

# "These steps pass when all three phases are finished or all three are idle."
ALL_FINISHED_OR_ALL_IDLE = {"jira_dev_status", "github_commits", "github_reviews", "github_pull_requests",
                            "github_prs_commits_reviews_comments"}


def contract_all_finished(document: dict) -> bool:
    # "Only a job whose overall is FINISHED can be finished."
    if document.get("overall") != "FINISHED":
        return False
    # "A document with no steps is finished."
    for name, step in document.get("steps", {}).items():  # "Every step present in the document is judged"
        # "A missing phase key counts as idle. Values are compared exactly."
        values = [step.get(phase, "idle") for phase in PHASES]
        if all(v == "finished" for v in values):
            continue
        if name in ALL_FINISHED_OR_ALL_IDLE and all(v == "idle" for v in values):
            continue
        return False  # "Every other step must be finished in all three phases."
    return True


# --- documents of the real shape -------------------------------------------------------------------

REAL_STEPS = ["jira_projects_and_issue_types", "jira_statuses_and_relationships", "jira_issues_with_changelogs",
              "jira_dev_status", "jira_sprint_reports", "github_repositories", "github_prs_commits_reviews_comments",
              "wex_fabric_data", "wex_ad_users", "github_commits", "github_reviews", "github_pull_requests"]
ODD_STEPS = ["JIRA_DEV_STATUS", "Jira_Dev_Status", "github_PRs_commits_reviews_comments", "confluence_pages", "x", ""]
# Mostly the values that decide, so that both verdicts are common; then the odd ones.
VALUES = st.one_of(st.sampled_from(["finished", "finished", "finished", "idle", "idle"]),
                   st.sampled_from(["running", "failed", "FINISHED", "Idle", "IDLE", "done", "", None]))
STEP = st.fixed_dictionaries(
    {}, optional={"extraction": VALUES, "transform": VALUES, "embedding": VALUES,
                  "order": st.integers(1, 9), "display_name": st.sampled_from(["Projects & Types", "x"])})
WHOLE_STEP = st.fixed_dictionaries({p: VALUES for p in PHASES})
STEPS = st.one_of(
    st.dictionaries(st.sampled_from(REAL_STEPS + ODD_STEPS), st.one_of(STEP, WHOLE_STEP), max_size=8),
    # a whole seeded Jira or GitHub document, then perturbed
    st.builds(lambda base, extra: {**{s: {p: "finished" for p in PHASES} for s in base}, **extra},
              st.sampled_from([REAL_STEPS[:4], REAL_STEPS[:5], REAL_STEPS[5:7]]),
              st.dictionaries(st.sampled_from(REAL_STEPS + ODD_STEPS), WHOLE_STEP, max_size=2)),
)
OVERALL = st.sampled_from(["FINISHED", "FINISHED", "FINISHED", "RUNNING", "READY", "finished", "FAILED",
                           "RATE_LIMIT_REACHED", "RATE_LIMITED"])
DOCUMENTS = st.one_of(
    st.builds(lambda overall, steps: {"overall": overall, "steps": steps, "token": "t"}, OVERALL, STEPS),
    st.builds(lambda overall: {"overall": overall}, OVERALL),  # no steps key
)


@pytest.fixture(scope="module")
def seeded_rules(pg_server, template_db) -> dict[str, str]:
    """The step rules a fresh `etlctl db init` seeds: what etlctl really decides with."""
    with admin_connect(pg_server, template_db) as conn:
        return dict(conn.execute("SELECT step, rule FROM etlctl.step_rules").fetchall())


@settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=DOCUMENTS)
def test_etlctl_agrees_with_the_contract_on_random_documents(seeded_rules, document):
    completion = rules.evaluate(seeded_rules, document)
    assert completion.all_finished is contract_all_finished(document), (document, completion.reasons)
    assert bool(completion.reasons) is not completion.all_finished


def test_the_documents_reach_both_verdicts():
    """The strategy must be able to produce what it is meant to compare: finished and not finished jobs
    (an always-false reference would agree with an always-false etlctl)."""
    settings_ = settings(database=None, max_examples=5000, derandomize=True)
    finished = find(DOCUMENTS, lambda d: contract_all_finished(d) and len(d.get("steps", {})) >= 5, settings=settings_)
    assert len(finished["steps"]) >= 5
    idle_allowed = find(DOCUMENTS, lambda d: contract_all_finished(d)
                        and any(all(s.get(p, "idle") == "idle" for p in PHASES) for s in d.get("steps", {}).values()),
                        settings=settings_)
    assert idle_allowed
    assert not contract_all_finished(find(DOCUMENTS, lambda d: d["overall"] == "FINISHED"
                                          and not contract_all_finished(d), settings=settings_))


def test_the_reference_reads_the_contracts_examples():
    assert contract_all_finished({"overall": "FINISHED"})
    assert contract_all_finished({"overall": "FINISHED", "steps": {"jira_dev_status": {}}})
    assert not contract_all_finished({"overall": "FINISHED", "steps": {"x": {}}})
    assert not contract_all_finished({"overall": "FINISHED", "steps": {"x": {p: "FINISHED" for p in PHASES}}})
    assert not contract_all_finished({"overall": "RUNNING", "steps": {}})

