"""Concurrent writers on one job: no update may be lost."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.helpers import PHASES, REPO

WORKERS = 8
UPDATES = 60  # a multiple of 6: each phase ends "finished"
STEPS = [f"step_{i}" for i in range(WORKERS)]


def many_writers(db, mode: str) -> dict:
    """8 processes, one step each, UPDATES flips each; returns the final steps."""
    job = db.job("Multi", status={"overall": "RUNNING", "token": "t", "steps": {
        s: {p: "idle" for p in PHASES} for s in STEPS}})
    start = time.time() + 1.5  # let every interpreter start, then go together
    procs = [subprocess.Popen([sys.executable, "-m", "tests.workers", mode, db.dsn, str(job), step, str(UPDATES), str(start)],
                              cwd=REPO, stderr=subprocess.PIPE, text=True) for step in STEPS]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return job, db.status(job)["steps"]


def lost(steps: dict) -> list[str]:
    return [f"{s}.{p}" for s in STEPS for p in PHASES if steps[s][p] != "finished"]


@pytest.mark.slow
def test_concurrent_step_updates_are_never_lost(db):
    job, steps = many_writers(db, "step")
    assert lost(steps) == []
    # Every update changed the row and was audited: nothing silently overwritten.
    assert db.value("SELECT count(*) FROM etlctl.audit WHERE job_id = %s", job) == WORKERS * UPDATES


@pytest.mark.slow
def test_the_same_harness_catches_a_read_modify_write(db):
    """Proof that the test above can fail: a read-modify-write loses updates here."""
    _, steps = many_writers(db, "rmw")
    assert lost(steps) != []
