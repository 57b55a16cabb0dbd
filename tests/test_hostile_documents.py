"""One bad row never stops the others (issue 11, §1).

Hypothesis draws hostile status documents (nesting a thousand levels deep,
numbers Python cannot hold, etlctl's own keys of the wrong type or out of
range, odd Unicode and escape sequences, NaN-like strings, ten-megabyte
values, documents that are not objects) and puts them in one table with
healthy jobs. Then sweep, schedule-next, doctor, metrics, status, why, check
and reset --force run over that table, in-process as a user runs them: the
healthy jobs always progress, no command exits 1, no text output carries a raw
control character or Python's None, and reset --force always works on the
hostile job.

A document is written as JSON text (not through Python's json module, which
can neither write 1e400 nor nest a thousand levels), so PostgreSQL stores
exactly what a hostile writer would.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.helpers import JIRA5_STEPS, PHASES, Cli, steps

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW


def naive(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


# --- hostile JSON, written as text -------------------------------------------------------------


class Raw:
    """JSON text put in the document as it is: numbers Python cannot write, nesting it cannot reach.
    `shown` keeps a failing example readable (hypothesis prints it)."""

    def __init__(self, text: str, shown: str = "") -> None:
        self.text, self.shown = text, shown

    def __repr__(self) -> str:
        return self.shown or f"Raw({self.text!r})"


def nested(depth: int, kind: str = "array") -> Raw:
    if kind == "array":
        return Raw("[" * depth + "]" * depth, f"nested({depth}, {kind!r})")
    return Raw('{"a":' * depth + "{}" + "}" * depth, f"nested({depth}, {kind!r})")


def big(megabytes: float) -> Raw:
    return Raw(json.dumps("x" * int(megabytes * 1024 * 1024)), f"big({megabytes})")


def to_json(value) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


# Text no view may show as it is: an escape sequence that retitles the terminal, one that clears it, a
# bidirectional override, a line separator, a bare carriage return; and text that reads like a number.
ODD_TEXT = st.sampled_from([
    "\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "a\u202eb", "line\u2028break", "cr\rover", "tab\there", "\x9b31m",
    "NaN", "Infinity", "-Infinity", "1e400", "", " ", "é\u0301", "日本", "🚀", "x" * 300,
])
ODD_TEXT_OR_NAME = st.one_of(ODD_TEXT, st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                               max_size=12).filter(lambda t: "None" not in t))
HUGE_NUMBERS = st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("3000000000"), Raw("1" + "0" * 5000, "1e5000"),
                                Raw("0." + "1" * 500), Raw("2147483648"), Raw("-1")])
DEEP = st.builds(nested, st.sampled_from([65, 200, 1000, 3000]), st.sampled_from(["array", "object"]))
WEIRD = st.one_of(ODD_TEXT, HUGE_NUMBERS, DEEP, st.sampled_from([None, True, [], {}, [1, "x"], {"x": [None]}]))
TIMES = st.sampled_from(["9999-12-31T23:59:59+00:00", "infinity", "-infinity", "NaN", "now", "2026-13-45T00:00:00+00:00",
                         "0001-01-01T00:00:00+14:00", "2026-11-28T15:00:30", "2026-11-29T16:00:00+00:00",
                         "2026-11-28T14:00:00+00:00"])

OWN_KEYS = st.fixed_dictionaries({}, optional={
    "reset_stage": st.one_of(st.sampled_from(["check", "cooldown", "gave_up"]), WEIRD),
    "reset_deadline": st.one_of(TIMES, WEIRD),
    "reset_attempt": st.one_of(st.integers(0, 6), HUGE_NUMBERS, WEIRD),
    "reset_gave_up_at": st.one_of(TIMES, WEIRD),
    "reset_token": st.one_of(st.just("run-h"), WEIRD),
    "token": st.one_of(st.just("run-h"), WEIRD),
})
PHASE_VALUE = st.one_of(st.sampled_from(["finished", "idle", "running", "failed"]), WEIRD)
STEP_BODY = st.one_of(
    st.fixed_dictionaries({p: PHASE_VALUE for p in PHASES},
                          optional={"order": st.one_of(st.integers(-3, 9), HUGE_NUMBERS), "display_name": ODD_TEXT,
                                    "meta": WEIRD}),
    WEIRD,
)
STEPS = st.one_of(st.dictionaries(ODD_TEXT_OR_NAME, STEP_BODY, max_size=4), WEIRD)
UNKNOWN = st.dictionaries(st.sampled_from(["ui", "worker", "ratio", "\x1b[31mred", "x" * 100]),
                          st.one_of(WEIRD, st.builds(big, st.sampled_from([1.5, 10]))), max_size=2)


@st.composite
def hostile_documents(draw):
    """A status document (to_json writes it). The table's CHECK (overall among the five states) still
    holds: a document that is not an object passes it only when it holds the string "overall"."""
    if draw(st.integers(0, 9)) == 0:
        return ["overall", draw(WEIRD)]
    doc = {"overall": draw(st.sampled_from(["FINISHED", "FINISHED", "RUNNING", "READY", "FAILED", "RATE_LIMIT_REACHED"]))}
    doc.update(draw(OWN_KEYS))
    if draw(st.booleans()):
        doc["steps"] = draw(STEPS)
    doc.update(draw(UNKNOWN))
    return doc


# --- the table: healthy jobs beside the hostile ones ---------------------------------------------------


@pytest.fixture
def table(db):
    """Empties the database between examples (hypothesis runs many in one test)."""

    def reset_tables():
        db.sql("TRUNCATE etl_jobs, integrations, tenants, etlctl.audit, etlctl.queue RESTART IDENTITY CASCADE")

    return reset_tables


def seed(db, documents: list[str], hostile_names: list[str]) -> tuple[dict, list[int]]:
    acme = db.tenant("acme")
    healthy = {
        # FINISHED an hour ago, every step finished: the sweep starts its cool-down, then resets it.
        "finished": db.job("Jira", acme, db.integration(acme), status={"overall": "FINISHED", "token": "run-1",
                                                                      "steps": steps(JIRA5_STEPS)},
                           last_run_finished_at=naive(-3600)),
        # READY and due on an idle integration: schedule-next starts it.
        "ready": db.job("GitHub", acme, db.integration(acme, "GitHub"), status={"overall": "READY", "steps": {}}),
    }
    hostile = []
    for n, (text, name) in enumerate(zip(documents, hostile_names)):
        tenant = db.tenant(f"hostile-{n}")
        # Its own integration: a hostile RUNNING job must not hold a healthy one's.
        hostile.append(db.value(
            "INSERT INTO etl_jobs (job_name, tenant_id, integration_id, status, last_run_finished_at, next_run) "
            "VALUES (%s, %s, %s, %s::jsonb, %s, %s) RETURNING id",
            name, tenant, db.integration(tenant), to_json(text), naive(-3600), naive(-60)))
    return healthy, hostile


# A raw control character or bidirectional override on a terminal (the views show them as escapes).
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def run(cli, *args, ok=(0,)):
    result = cli(*args)
    assert result.exit_code in ok, (args, result.exit_code, result.stderr[-2000:])
    if "--json" not in args and args[0] != "metrics":
        shown = result.stdout + result.stderr
        assert not RAW_CONTROL.search(shown), (args, RAW_CONTROL.search(shown))
        assert not re.search(r"\bNone\b", shown), (args, shown[-2000:])
    return result


# No shrinking: a failing example is printed as drawn (shrinking a database test takes minutes).
@settings(max_examples=20, deadline=None, database=None, derandomize=True, print_blob=True,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(documents=st.lists(hostile_documents(), min_size=1, max_size=3),
       names=st.lists(st.one_of(st.just("Jira"), ODD_TEXT_OR_NAME.filter(lambda t: t.strip())), min_size=3, max_size=3))
# The reproductions, every time.
@example(documents=[{"overall": "FINISHED", "token": "t", "steps": {}, "ui": nested(1000)},
                    {"overall": "FINISHED", "token": "t", "steps": {}, "reset_attempt": Raw("3000000000"),
                     "reset_deadline": "2026-11-28T14:00:00+00:00"},
                    {"overall": "FINISHED", "token": "t", "steps": {}, "reset_attempt": Raw("1e400"),
                     "reset_stage": "check", "reset_deadline": "2026-11-28T14:00:00+00:00"}],
         names=["Jira", "Jira", "Jira"])
@example(documents=[{"overall": "FINISHED", "token": "t", "steps": {}, "reset_stage": "check",
                     "reset_deadline": "9999-12-31T23:59:59+00:00"},
                    {"overall": "RUNNING", "token": "t", "steps": {"s": {"extraction": "running"}}, "ui": big(10)},
                    ["overall", nested(1000)]],
         names=["\x1b]0;pwned\x07", "a\u202eb", "Jira"])
def test_hostile_documents_affect_only_their_own_job(db, table, frozen, documents, names):
    table()
    healthy, hostile = seed(db, documents, names[: len(documents)])
    cli = Cli(db.dsn)

    # The batch commands report the hostile jobs and carry on with the rest.
    run(cli, "sweep")
    frozen.frozen.tick(31)  # past the cool-down
    run(cli, "sweep", "-v")
    run(cli, "sweep", "--json")
    assert db.value("SELECT status ->> 'overall' FROM etl_jobs WHERE id = %s", healthy["finished"]) == "READY"
    run(cli, "schedule-next", "--explain")
    assert db.value("SELECT status ->> 'overall' FROM etl_jobs WHERE id = %s", healthy["ready"]) == "RUNNING"
    run(cli, "doctor", ok=(0, 3))
    assert cli("doctor", "--json").exit_code in (0, 3)
    run(cli, "metrics")
    run(cli, "status")
    run(cli, "status", "--json")

    for job in hostile:
        run(cli, "status", job)
        run(cli, "status", job, "--json")
        run(cli, "why", job)
        run(cli, "check", job, ok=(0, 3))
        run(cli, "check", job, "--json", ok=(0, 3))
        before = db.value("SELECT status ->> 'overall' FROM etl_jobs WHERE id = %s", job)
        forced = run(cli, "reset", job, "--force", ok=(0, 4))
        # (Read in SQL: this test's own connection has psycopg's plain loaders, which fail on such documents.)
        after = db.one("SELECT status ->> 'overall' AS overall, jsonb_typeof(status) AS kind FROM etl_jobs WHERE id = %s",
                       job)
        if forced.exit_code == 4:
            # Only a job in a state that is no run (and with nothing etlctl cannot read) is refused.
            assert before == "RATE_LIMIT_REACHED", forced.stderr
        else:
            assert (after["kind"], after["overall"]) == ("object", "READY"), forced.stderr
        # Whatever it was, the job reads whole now (what etlctl could not read was dropped, and said).
        if forced.exit_code == 0 and before != "READY":
            assert db.value("SELECT (etlctl.readable_status(status)).unread FROM etl_jobs WHERE id = %s", job) == []
        run(cli, "why", job)
    assert run(cli, "doctor", ok=(0, 3)).exit_code in (0, 3)
