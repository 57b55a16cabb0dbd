"""The named-query loader."""

from __future__ import annotations

import pytest

from etlctl.store import queries


def test_blocks_are_split_by_name_and_keep_their_comments():
    blocks = queries.parse("-- name: a\n-- what a does\nSELECT 1;\n\n-- name: b\nSELECT 2\n")
    assert blocks == {"a": "-- what a does\nSELECT 1", "b": "SELECT 2"}


def test_a_repeated_or_empty_name_is_refused():
    with pytest.raises(ValueError, match="repeated"):
        queries.parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")
    with pytest.raises(ValueError):
        queries.parse("-- name:\nSELECT 1\n")


def test_include_stands_for_the_named_block():
    blocks = {"cols": "SELECT x FROM t", "one": "-- include: cols\nWHERE x = 1", "two": "  -- include: one\nLIMIT 1"}
    assert queries.expand("one", blocks) == "SELECT x FROM t\nWHERE x = 1"
    assert queries.expand("two", blocks) == "SELECT x FROM t\nWHERE x = 1\nLIMIT 1"


def test_a_missing_or_circular_include_is_refused():
    with pytest.raises(ValueError, match="does not exist"):
        queries.expand("a", {"a": "-- include: nope"})
    with pytest.raises(ValueError, match="includes itself"):
        queries.expand("a", {"a": "-- include: b", "b": "-- include: a"})


def test_every_shipped_query_loads_and_shares_the_job_row():
    names = queries.names()
    assert {"job_detail", "sweep_batch", "oncall_jobs", "schedule_plan", "step_update"} <= set(names)
    projection = queries.get("job_row").split("SELECT", 1)[1]
    for name in ("job_detail", "sweep_batch", "oncall_jobs"):
        assert projection in queries.get(name)
        assert "-- include:" not in queries.get(name)
