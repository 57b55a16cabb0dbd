"""A malformed or hostile document affects only its own job (issue 11, §1): the exact words.

test_hostile_documents.py draws documents at random; here each class of defect
has its reproduction and the exact output: a document nested too deep for
Python, numbers it cannot hold, etlctl's own keys out of their type or range,
a deadline no legal wait wrote, and what reset --force keeps and drops.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from etlctl.core import document, lifecycle
from tests.helpers import REPO, finished

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW
DEEP = "[" * 1000 + "]" * 1000


def naive(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def iso(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).isoformat()


def insert(db, name: str, text: str, **columns) -> int:
    """A job whose document is this JSON text, as a hostile writer stores it."""
    tenant = db.tenant(f"tenant-{name}")
    cols = {"job_name": name, "tenant_id": tenant, "last_run_finished_at": naive(-3600), **columns}
    names = ", ".join(cols)
    return db.value(f"INSERT INTO etl_jobs ({names}, status) VALUES ({', '.join(['%s'] * len(cols))}, %s::jsonb) "
                    "RETURNING id", *cols.values(), text)


def text_of(db, job: int, path: str = "{}") -> str:
    return db.value("SELECT status #>> %s FROM etl_jobs WHERE id = %s", path, job)


# --- nesting Python cannot read ------------------------------------------------------------------


def test_a_document_nested_a_thousand_levels_deep_is_read_without_its_deep_part(db, cli, frozen):
    deep = insert(db, "Jira", '{"overall": "FINISHED", "token": "t1", "steps": {}, "ui": ' + DEEP + "}")
    healthy = db.job("GitHub", db.tenant("acme"), status=finished(["github_repositories"]),
                     last_run_finished_at=naive(-3600))

    sweep = cli("sweep", "--cooldown", "0")
    assert (sweep.exit_code, sweep.stderr) == (0, "")
    assert {line.split()[0]: line.split()[2] for line in sweep.stdout.splitlines()[1:]} == {
        str(deep): "reset", str(healthy): "reset"}  # what etlctl does not read is none of the flow's business
    assert text_of(db, deep, "{ui}") == DEEP  # kept as it was: etlctl never repairs a document on its own

    status = cli("status", deep, "--json")
    assert status.exit_code == 0
    assert status.json()["status"]["ui"] == "<not read: nested more than 64 levels deep>"
    doctor = cli("doctor", "--json")
    [finding] = [f for f in doctor.json()["findings"] if f["code"] == "malformed_status"]
    assert finding["summary"] == f"job {deep} (Jira, tenant tenant-Jira), READY: ui: not read (nested more than 64 levels deep)"
    assert [fix["command"] for fix in finding["fix"]] == [f"etlctl reset {deep} --force"]
    assert finding["fix"][0]["note"] == ("rewrites it as a reset does; it drops what etlctl cannot read (ui) and keeps "
                                         "every other key; warning: next_run becomes now + its interval")


def test_reset_force_drops_only_what_it_cannot_read_and_says_so(db, cli):
    text = ('{"overall": "RUNNING", "token": "t1", "keep": {"a": [1, 2]}, "ui": ' + DEEP + ', '
            '"steps": {"jira_dev_status": {"order": 4, "extraction": "running", "meta": ' + DEEP + "}}}")
    job = insert(db, "Jira", text)
    result = cli("reset", job, "--force")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (
        f"etlctl: warning: forced reset of job {job} (Jira, tenant tenant-Jira) overrode: overall was RUNNING; "
        "jira_dev_status.extraction: still running\n"
        f"etlctl: warning: dropped what etlctl cannot read from job {job} (Jira, tenant tenant-Jira)'s status document "
        "(kept every other key): ui (nested more than 64 levels deep); steps.jira_dev_status.meta (nested more than "
        "64 levels deep)\n")
    after = db.status(job)
    assert after == {"overall": "READY", "token": None, "keep": {"a": [1, 2]}, "reset_stage": None, "reset_deadline": None,
                     "reset_attempt": 0, "reset_gave_up_at": None, "reset_token": None,
                     "steps": {"jira_dev_status": {"order": 4, "extraction": "idle", "transform": "idle",
                                                   "embedding": "idle"}}}
    [audit] = db.audit(job)
    assert audit["details"]["dropped"] == [
        {"path": ["ui"], "reason": "nested more than 64 levels deep"},
        {"path": ["steps", "jira_dev_status", "meta"], "reason": "nested more than 64 levels deep"}]
    assert (audit["from_state"], audit["to_state"], audit["token"]) == ("RUNNING", "READY", "t1")


def test_reset_force_guards_the_whole_document_when_it_drops_something(db, cli, monkeypatch):
    """Dropping a part another writer just replaced would lose their write: the guard is the whole document."""
    from etlctl.actions import flow

    job = insert(db, "Jira", '{"overall": "FAILED", "token": "t1", "steps": {}, "ui": ' + DEEP + "}")
    real_apply = flow.apply

    def a_writer_first(session, transitions, skip_locked=False):
        db.sql("UPDATE etl_jobs SET status = status || '{\"ui\": \"replaced\"}' WHERE id = %s", job)
        return real_apply(session, transitions, skip_locked)

    monkeypatch.setattr(flow, "apply", a_writer_first)
    result = cli("reset", job, "--force")
    assert (result.exit_code, result.stderr.splitlines()[-1]) == (
        4, f"etlctl: job {job} (Jira, tenant tenant-Jira) changed while resetting it (a worker or another etlctl); "
           "nothing changed, look again")
    assert text_of(db, job, "{ui}") == "replaced" and text_of(db, job, "{overall}") == "FAILED"


def test_a_document_that_is_not_an_object_is_reported_and_force_reset(db, cli):
    job = insert(db, "Jira", '["overall", ' + DEEP + "]")
    assert cli("status", job).exit_code == 0
    why = cli("why", job)
    assert (why.exit_code, why.stdout.splitlines()[1]) == (
        0, "  state    overall is missing: not a state etlctl knows")
    check = cli("check", job)
    assert (check.exit_code, check.stderr) == (
        3, f"etlctl: job {job} (Jira, tenant tenant-Jira) not finished: overall is null, not FINISHED; the status "
           "document is unreadable (nested more than 64 levels deep), not an object\n")
    result = cli("reset", job, "--force")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"etlctl: warning: dropped what etlctl cannot read from job {job} (Jira, tenant tenant-Jira)'s status document "
        "(started it over): the whole document (nested more than 64 levels deep)")
    assert db.status(job) == {"overall": "READY", "token": None, "reset_stage": None, "reset_deadline": None,
                              "reset_attempt": 0, "reset_gave_up_at": None, "reset_token": None}


def test_a_ten_megabyte_value_is_not_read_and_not_lost(db, cli):
    big = "x" * (10 * 1024 * 1024)
    job = insert(db, "Jira", '{"overall": "FINISHED", "token": "t1", "steps": {}, "log": "' + big + '"}')
    status = cli("status", job, "--json")
    assert status.json()["status"]["log"] == "<not read: 10.0 MB long, in a document over 1.0 MB>"
    assert cli("sweep", "--cooldown", "0").exit_code == 0
    assert text_of(db, job, "{overall}") == "READY" and text_of(db, job, "{log}") == big


# --- numbers Python cannot hold -------------------------------------------------------------------


@pytest.mark.parametrize("number, shown", [
    ("3000000000", "a number (3000000000)"),
    ("1e400", "a number of 401 digits"),
    ("-1", "a number (-1)"),
    ("2.5", "a number (2.5)"),
    ('"NaN"', "'NaN'"),
])
def test_a_reset_attempt_out_of_range_is_malformed_never_a_crash(db, cli, frozen, number, shown):
    bad = insert(db, "Jira", '{"overall": "FINISHED", "token": "t1", "steps": {}, "reset_stage": "check", '
                             f'"reset_deadline": "{iso(-60)}", "reset_attempt": {number}}}')
    healthy = db.job("GitHub", db.tenant("acme"), status=finished(["github_repositories"]),
                     last_run_finished_at=naive(-3600))
    problem = f"reset_attempt is {shown}, not a count from 0 to 1,000,000"
    sweep = cli("sweep", "--json")
    assert sweep.exit_code == 0, sweep.stderr
    assert [(r["job_id"], r["action"], r["detail"]) for r in sweep.json()] == [
        (bad, "malformed", f"malformed reset state: {problem}"),
        (healthy, "cooldown", sweep.json()[1]["detail"])]
    why = cli("why", bad)
    assert why.stdout.splitlines()[2] == f"  waiting  nothing: its reset state is unreadable ({problem})"
    doctor = cli("doctor", "--json").json()
    assert [f["summary"] for f in doctor["findings"] if f["code"] == "malformed_status"] == [
        f"job {bad} (Jira, tenant tenant-Jira), FINISHED: its reset state: {problem}"]
    assert cli("reset", bad, "--force").exit_code == 0


def test_numbers_python_cannot_hold_under_unknown_keys_are_shown_as_their_digits(db, cli):
    job = insert(db, "Jira", '{"overall": "READY", "steps": {}, "huge": 1' + "0" * 5000 + ', "tiny": 1e-400}')
    shown = cli("status", job, "--json")
    assert shown.exit_code == 0
    assert shown.json()["status"]["huge"] == "1" + "0" * 5000  # JSON text, not a crash; the value is the database's
    assert shown.json()["status"]["tiny"] == 0.0


# --- deadlines no legal wait wrote ------------------------------------------------------------------


@pytest.mark.parametrize("deadline", ["9999-12-31T23:59:59+00:00", iso(lifecycle.MAX_WAIT + 60)])
def test_a_deadline_further_ahead_than_the_longest_wait_is_malformed(db, cli, frozen, deadline):
    job = insert(db, "Jira", '{"overall": "FINISHED", "token": "t1", "steps": {}, "reset_stage": "check", '
                             f'"reset_attempt": 1, "reset_deadline": "{deadline}"}}')
    problem = (f"reset_deadline '{deadline}' is further ahead than the longest wait of the flow (1d): no run wrote it")
    waiting = cli("wait-and-reset", job)  # at once: never a wait until the year 9999
    assert (waiting.exit_code, waiting.stderr) == (
        4, f"etlctl: job {job} (Jira, tenant tenant-Jira): malformed reset state: {problem}\n")
    sweep = cli("sweep")
    assert sweep.stdout.splitlines()[1].split(None, 3)[2:] == ["malformed", f"malformed reset state: {problem}"]
    assert cli("doctor", "--json").json()["findings"][0]["summary"].endswith(f"its reset state: {problem}")


def test_a_deadline_within_the_longest_wait_is_waited_for(db, cli, frozen):
    job = insert(db, "Jira", '{"overall": "FINISHED", "token": "t1", "steps": {}, "reset_stage": "check", '
                             f'"reset_attempt": 1, "reset_deadline": "{iso(lifecycle.MAX_WAIT - 60)}"}}')
    assert cli("sweep", "-v").stdout == ""  # not due, not malformed
    assert "reset pending: attempt 2 of 5, next check at 14:59:00 (in 23h59m)" in cli("why", job).stdout


# --- etlctl's own keys, by type -----------------------------------------------------------------------


@pytest.mark.parametrize("key, value, problem", [
    ("token", "7", "token is a number (7), not a run token"),
    ("token", '{"a": 1}', 'token is an object ({"a": 1}), not a run token'),
    ("token", '"' + "t" * 300 + '"', "token is '" + "t" * 58 + "…', not a run token"),
    ("reset_token", "[]", "reset_token is an array ([]), not a run token"),
    ("reset_stage", '"\\u001b[2J"', "reset_stage is '\\x1b[2J'"),
    ("reset_gave_up_at", '"yesterday"', "reset_gave_up_at 'yesterday' is not an ISO time with offset"),
    ("reset_deadline", '"0001-01-01T00:00:00+14:00"',
     "reset_deadline '0001-01-01T00:00:00+14:00' is not an ISO time with offset"),
])
def test_own_keys_of_the_wrong_type_are_malformed(db, cli, frozen, key, value, problem):
    fields = {"overall": '"FINISHED"', "token": '"t1"', "steps": "{}", "reset_stage": '"check"',
              "reset_deadline": f'"{iso(-60)}"', key: value}
    job = insert(db, "Jira", "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}")
    sweep = cli("sweep", "--json")
    assert [(r["job_id"], r["detail"]) for r in sweep.json()] == [(job, f"malformed reset state: {problem}")]
    assert not re.search("[\x00-\x1f]", cli("doctor").stdout.replace("\n", ""))


# --- the bounds live in two places: PostgreSQL and Python --------------------------------------------


def test_the_reading_bounds_agree_in_sql_and_python():
    for source in ((REPO / "sql" / "schema.sql").read_text(), (REPO / "sql" / "migrations" / "0007_hardening.sql").read_text()):
        body = source[source.index("FUNCTION etlctl.readable_status"):]
        assert f"max_bytes CONSTANT integer := {document.MAX_BYTES};" in body
        assert f"max_part CONSTANT integer := {document.MAX_PART_BYTES};" in body
        assert f"max_depth CONSTANT integer := {document.MAX_DEPTH};" in body


def test_the_json_loader_never_raises():
    assert document.loads("[" * 5000 + "]" * 5000) == document.Unreadable("nested too deep for Python (10,000 bytes)")
    assert document.loads('{"a": 1e400}') == {"a": document.BigNumber("1e400")}
    assert document.loads("1" * 4001) == document.BigNumber("1" * 4001)
    assert document.loads(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    assert isinstance(document.loads("{not json"), document.Unreadable)


def test_an_attempt_past_the_flows_checks_is_the_last_check_not_attempt_8_of_5(db, cli, frozen):
    """The existing reset scheduler retries forever and counts on: reset_attempt 7 is legal, and its check
    is the flow's last."""
    job = insert(db, "Jira", '{"overall": "FINISHED", "token": "t1", "steps": {"s": {"extraction": "running"}}, '
                             f'"reset_attempt": 7, "reset_deadline": "{iso(60)}"}}')
    lines = cli("why", job).stdout.splitlines()
    assert lines[2] == "  waiting  reset pending: attempt 8, past the 5 checks of --backoff: this check is the last, " \
                       "next check at 15:01:00 (in 1m)"
    assert lines[4] == "  next     if it still fails, this last check gives up"


def test_watch_shows_a_hostile_job_and_keeps_watching(db, cli):
    """watch reads every job it follows through the same bounded read; its rows show what the document holds."""
    import signal

    from tests.test_watch import Watch

    job = insert(db, "Jira", '{"overall": "RUNNING", "token": "t1", "ui": ' + DEEP + ', "steps": {"x\\u001b[2Jy": '
                             '{"extraction": "running", "huge": 1' + "0" * 5000 + "}}}")
    watch = Watch([str(job)], db.dsn)
    try:
        assert watch.stderr_until("etlctl: watching job")
        first = watch.line()  # the header
        assert first.split()[:3] == ["TIME", "JOB", "NAME"]
        assert "current state" in watch.line()
        db.sql("UPDATE etl_jobs SET status = jsonb_set(status, ARRAY['steps', E'x\\u001b[2Jy', 'extraction'], "
               "'\"finished\"') WHERE id = %s", job)
        changed = watch.line()
        assert "x\\x1b[2Jy.extraction running → finished" in changed and "\x1b" not in changed
        assert watch.stop(signal.SIGINT) == 130
    finally:
        watch.kill()
