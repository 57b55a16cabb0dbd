"""The durable reset state machine, as pure functions of (document, now)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from etlctl.core import lifecycle
from etlctl.core.lifecycle import Timings, decide
from tests.helpers import finished

JIRA = {}  # the Jira steps of these documents must all finish: no step_rules row for any of them
T0 = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
TIMINGS = Timings()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def pending(stage="check", deadline=0.0, attempt=0, **overrides):
    status = finished(**overrides)
    status.update(reset_stage=stage, reset_deadline=at(deadline).isoformat(), reset_attempt=attempt)
    return status


def test_finished_without_a_pending_reset_schedules_the_first_check_delay_after_finishing():
    d = decide(finished(), JIRA, now=at(5), timings=TIMINGS, finished_at=T0)
    assert (d.action, d.deadline, d.attempt, d.stage) == (lifecycle.SCHEDULE, at(30), 0, lifecycle.CHECK)


def test_finished_long_ago_is_checked_at_once():
    d = decide(finished(), JIRA, now=at(3600), timings=TIMINGS, finished_at=T0)
    assert d.action == lifecycle.START_COOLDOWN
    assert d.deadline == at(3600 + 30)


def test_before_the_deadline_it_waits():
    d = decide(pending(deadline=30), JIRA, now=at(10), timings=TIMINGS)
    assert (d.action, d.deadline) == (lifecycle.WAIT, at(30))


@pytest.mark.parametrize(("attempt", "wait"), [(0, 30), (1, 60), (2, 180), (3, 300)])
def test_each_failed_check_waits_the_next_backoff(attempt, wait):
    status = pending(deadline=100, attempt=attempt, jira_dev_status__embedding="running")
    d = decide(status, JIRA, now=at(100), timings=TIMINGS)
    assert (d.action, d.attempt, d.deadline) == (lifecycle.RETRY, attempt + 1, at(100 + wait))
    assert "jira_dev_status.embedding: still running" in d.reason


def test_the_fifth_failed_check_gives_up():
    status = pending(deadline=100, attempt=4, jira_dev_status__embedding="running")
    d = decide(status, JIRA, now=at(100), timings=TIMINGS)
    assert d.action == lifecycle.GIVE_UP
    assert d.reason == "gave up after 5 checks: jira_dev_status.embedding: still running"


def test_a_failed_phase_gives_up_at_once():
    status = pending(deadline=100, attempt=0, jira_dev_status__transform="failed")
    d = decide(status, JIRA, now=at(100), timings=TIMINGS)
    assert d.action == lifecycle.GIVE_UP
    assert "jira_dev_status.transform: failed" in d.reason


def test_a_passing_check_starts_the_cooldown_then_resets():
    d = decide(pending(deadline=30), JIRA, now=at(30), timings=TIMINGS)
    assert (d.action, d.stage, d.deadline) == (lifecycle.START_COOLDOWN, lifecycle.COOLDOWN, at(60))
    waiting = decide(pending(stage="cooldown", deadline=60), JIRA, now=at(45), timings=TIMINGS)
    assert waiting.action == lifecycle.WAIT
    done = decide(pending(stage="cooldown", deadline=60), JIRA, now=at(60), timings=TIMINGS)
    assert done.action == lifecycle.RESET


def test_a_step_that_regresses_during_the_cooldown_goes_back_to_checking():
    status = pending(stage="cooldown", deadline=60, attempt=1, jira_dev_status__embedding="running")
    d = decide(status, JIRA, now=at(60), timings=TIMINGS)
    assert (d.action, d.attempt, d.deadline) == (lifecycle.RETRY, 2, at(60 + 60))


def test_zero_cooldown_resets_straight_after_the_check():
    d = decide(pending(deadline=30), JIRA, now=at(30), timings=Timings(cooldown=0))
    assert d.action == lifecycle.RESET


def test_not_finished_gave_up_and_malformed_are_skipped():
    running = {**finished(), "overall": "RUNNING"}
    assert decide(running, JIRA, now=T0, timings=TIMINGS).action == lifecycle.SKIP
    gave_up = {**finished(), "reset_stage": "gave_up", "reset_deadline": None}
    assert decide(gave_up, JIRA, now=T0, timings=TIMINGS).action == lifecycle.SKIP
    for bad in ({"reset_deadline": "tomorrow"}, {"reset_deadline": "2026-11-28T10:00:00"},  # no offset
                {"reset_attempt": "2", "reset_deadline": at(0).isoformat()}, {"reset_stage": "later"}):
        d = decide({**finished(), **bad}, JIRA, now=T0, timings=TIMINGS)
        assert d.action == lifecycle.SKIP and "malformed" in d.reason, bad


def test_the_existing_systems_keys_without_a_stage_mean_a_pending_check():
    status = {**finished(), "reset_deadline": "2026-11-28T10:00:00-05:00", "reset_attempt": 2}
    state = lifecycle.reset_state(status)
    assert (state.stage, state.attempt, state.deadline) == (lifecycle.CHECK, 2, T0)


def test_whole_schedule_adds_up_to_the_flow_documents_timings():
    """Walk a job that never finishes from FINISHED to giving up: 30 s, then 30, 60, 180, 300."""
    status = finished(jira_dev_status__embedding="running")
    now, waits = T0, []
    for _ in range(20):
        d = decide(status, JIRA, now=now, timings=TIMINGS, finished_at=T0)
        if d.action == lifecycle.GIVE_UP:
            break
        if d.action in (lifecycle.SCHEDULE, lifecycle.RETRY):
            status = {**status, "reset_stage": d.stage, "reset_deadline": d.deadline.isoformat(), "reset_attempt": d.attempt}
            waits.append((d.deadline - now).total_seconds())
            now = d.deadline
    assert d.action == lifecycle.GIVE_UP
    assert waits == [30, 30, 60, 180, 300]


def test_a_stage_without_a_deadline_means_nothing_is_pending():
    """The existing system's reset clears reset_deadline but not etlctl's reset_stage."""
    status = {**finished(), "reset_stage": "cooldown", "reset_deadline": None}
    d = decide(status, JIRA, now=at(5), timings=TIMINGS, finished_at=T0)
    assert (d.action, d.deadline) == (lifecycle.SCHEDULE, at(30))


def test_reset_state_from_an_earlier_run_is_ignored():
    """reset_token says which run the keys belong to; the existing system's reset keeps keys it does not know."""
    old_give_up = {**finished(token="run-2"), "reset_stage": "gave_up", "reset_token": "run-1",
                   "reset_gave_up_at": at(-3600).isoformat()}
    d = decide(old_give_up, JIRA, now=at(5), timings=TIMINGS, finished_at=T0)
    assert d.action == lifecycle.SCHEDULE
    old_deadline = pending(stage="check", deadline=-600, attempt=4, token="run-2", jira_dev_status__embedding="running")
    old_deadline["reset_token"] = "run-1"
    d = decide(old_deadline, JIRA, now=at(5), timings=TIMINGS, finished_at=T0)
    assert (d.action, d.attempt) == (lifecycle.SCHEDULE, 0)
    # The same give-up, written for this run, stands.
    current = {**old_give_up, "reset_token": "run-2"}
    assert decide(current, JIRA, now=at(200), timings=TIMINGS, finished_at=T0).action == lifecycle.SKIP


def test_deadlines_are_real_time_across_a_daylight_saving_change():
    """01:59:50 EDT + 30 s is 01:00:20 EST, not 02:00:20 (an hour late)."""
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    now = datetime(2026, 11, 1, 1, 59, 50, tzinfo=new_york)  # the last seconds of daylight time

    def due_before(moment, **overrides):
        status = pending(**overrides)
        status["reset_deadline"] = (moment.astimezone(timezone.utc) - timedelta(seconds=60)).isoformat()
        return status

    d = decide(due_before(now), JIRA, now=now, timings=TIMINGS)
    assert d.action == lifecycle.START_COOLDOWN
    assert d.deadline.astimezone(timezone.utc) == now.astimezone(timezone.utc) + timedelta(seconds=30)
    assert d.deadline.utcoffset() == timedelta(hours=-5)  # shown in the zone's standard time
    repeated = datetime(2026, 11, 1, 1, 30, 0, fold=1, tzinfo=new_york)  # the repeated hour, standard time
    d = decide(due_before(repeated, jira_dev_status__embedding="running"), JIRA, now=repeated, timings=TIMINGS)
    assert d.action == lifecycle.RETRY
    assert (d.deadline.astimezone(timezone.utc) - repeated.astimezone(timezone.utc)).total_seconds() == 30


def test_after_keeps_the_end_of_the_calendar():
    far = datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc)
    assert lifecycle.after(far, 3600) == far
    assert lifecycle.known(far) is None and lifecycle.known(T0) == T0
