"""bench/writer.py, each mode, for a moment: `make bench` runs it for minutes, and a statement the
bench builds from etlctl's own (a parameter added to step_update, say) must fail here, not there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import running

WRITER = Path(__file__).resolve().parent.parent / "bench" / "writer.py"


@pytest.mark.parametrize("mode", ["etlctl", "bare", "sql-full", "sql-no-notify", "sql-no-audit", "sql-no-audit-notify"])
def test_each_writer_mode_updates_and_reads_back_its_own_values(db, mode):
    job = db.job("Jira", db.tenant("acme"), status=running(["pages"], value="idle", token="tok-bench-1"))
    done = subprocess.run([sys.executable, str(WRITER), mode, db.dsn, str(job), "pages", "tok-bench-1",
                           str(time.time()), "0.3"], capture_output=True, text=True, timeout=60,
                          cwd=WRITER.parent.parent)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["count"] > 0 and report["failed"] == 0, report
    if mode == "etlctl":  # the only mode that reads back the value it replaced (the SQL ones do not ask)
        assert report["mismatches"] == 0, report
    assert db.status(job)["steps"]["pages"]["extraction"] == report["last"]
