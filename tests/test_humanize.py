"""Durations that round-trip: what etlctl prints, it reads back; and each kind of duration flag
has a documented maximum (README, "Durations"), refused above it with exit 2."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etlctl.core import humanize
from etlctl.core.humanize import MAX_SINCE, duration, parse_backoff, parse_duration
from etlctl.core.lifecycle import MAX_WAIT
from etlctl.errors import UsageError
from tests.helpers import finished

UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}


@pytest.mark.parametrize(("text", "seconds"), [
    ("45s", 45), ("1m10s", 70), ("1m05s", 65), ("5h59m", 5 * 3600 + 59 * 60), ("1d5h", 29 * 3600),
    ("2d", 2 * 86400), ("1h30m", 5400), ("500ms", 0.5), ("30", 30), ("1.5", 1.5), ("1h 30m", 5400),
    ("2m", 120), ("1h", 3600), ("0", 0), ("1.5h", 5400), ("1s250ms", 1.25),
])
def test_it_reads_every_form_it_prints_and_the_plain_ones(text, seconds):
    assert parse_duration(text, "--delay") == seconds


@pytest.mark.parametrize(("text", "why"), [
    ("1m1h", "give each unit once, largest first, such as 1h30m"),
    ("1s1s", "give each unit once, largest first, such as 1h30m"),
    ("-5", "expected a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"),
    ("soon", "expected a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"),
    ("1e3", "expected a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"),
    ("nan", "expected a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"),
    ("1w", "expected a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"),
    ("", "expected a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"),
])
def test_what_is_not_a_duration_says_what_is(text, why):
    with pytest.raises(UsageError) as caught:
        parse_duration(text, "--delay")
    assert caught.value.message == f"invalid --delay {text!r}: {why}"


@given(st.integers(min_value=0, max_value=int(MAX_SINCE)))
def test_every_printed_duration_reads_back_to_the_precision_printed(n):
    text = duration(n)
    back = parse_duration(text, "--since", MAX_SINCE)
    assert duration(back) == text
    # duration() prints the two largest units and drops the rest: what it read is n without them.
    smallest = UNIT[text.rstrip("0123456789")[-1]]
    assert back <= n < back + smallest


@given(st.integers(min_value=0, max_value=int(MAX_WAIT)))
def test_every_wait_up_to_the_maximum_is_accepted(n):
    assert parse_duration(duration(n), "--delay", MAX_WAIT) <= MAX_WAIT


@pytest.mark.parametrize(("text", "maximum", "limit"), [
    ("99999999999h", MAX_WAIT, "1d"), ("1d1s", MAX_WAIT, "1d"), ("86401", MAX_WAIT, "1d"),
    ("3651d", MAX_SINCE, "3650d"), ("9" * 60, MAX_WAIT, "1d"),
])
def test_longer_than_the_maximum_is_refused_never_wrapped(text, maximum, limit):
    assert parse_duration("1d", "--delay", MAX_WAIT) == MAX_WAIT  # the maximum itself is allowed
    with pytest.raises(UsageError) as caught:
        parse_duration(text, "--delay", maximum)
    assert caught.value.message == f"invalid --delay {text!r}: the longest allowed is {limit}"


def test_a_very_long_text_is_refused_before_it_is_read():
    with pytest.raises(UsageError) as caught:
        parse_duration("9" * 400, "--delay")
    assert caught.value.message == "invalid --delay: 400 characters is not a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"


def test_a_backoff_list_takes_durations_each_under_the_maximum():
    assert parse_backoff("30s,1m,3m,5m", maximum=MAX_WAIT) == (30, 60, 180, 300)
    with pytest.raises(UsageError) as caught:
        parse_backoff("30,99999999999h", maximum=MAX_WAIT)
    assert caught.value.message == "invalid --backoff '99999999999h': the longest allowed is 1d"


def test_the_maximums_are_the_documented_ones():
    assert (MAX_WAIT, humanize.MAX_TIMEOUT, humanize.MAX_CHAIN_GRACE, MAX_SINCE) == (86400, 86400, 86400, 3650 * 86400)


@pytest.mark.parametrize(("args", "message"), [
    (["wait-and-reset", "1", "--backoff", "99999999999h"], "invalid --backoff '99999999999h': the longest allowed is 1d"),
    (["sweep", "--cooldown", "2d"], "invalid --cooldown '2d': the longest allowed is 1d"),
    (["complete", "1", "--delay", "1d1h"], "invalid --delay '1d1h': the longest allowed is 1d"),
    (["schedule-next", "--chain-grace", "25h"], "invalid --chain-grace '25h': the longest allowed is 1d"),
    (["history", "1", "--since", "3651d"], "invalid --since '3651d': the longest allowed is 3650d"),
    (["status", "--lock-timeout", "2d"], "Invalid value for '--lock-timeout': '2d': the longest allowed is 1d"),
])
def test_duration_flags_above_their_maximum_exit_2_and_change_nothing(cli, db, args, message):
    job = db.job("Jira", status=finished())
    before = db.row(job)
    result = cli(*args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"etlctl: {message}") or result.stderr.startswith(f"etlctl: error: {message}")
    assert result.stderr.count("\n") == 1
    assert db.row(job) == before


def test_an_environment_timing_is_named_by_its_variable(cli, db):
    db.job("Jira", status=finished())
    result = cli("sweep", env={"ETLCTL_COOLDOWN": "2d"})
    assert (result.exit_code, result.stderr) == (2, "etlctl: invalid ETLCTL_COOLDOWN '2d': the longest allowed is 1d\n")


def test_the_printed_forms_work_as_flags(cli, db, frozen):
    job = db.job("Jira", status=finished())
    result = cli("wait-and-reset", job, "--delay", "1m10s", "--backoff", "30s,1m", "--cooldown", "1h30m", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "first check scheduled" in result.stdout
    assert "(in 1m10s)" in result.stdout
