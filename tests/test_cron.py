"""etlctl cron: a valid crontab block, installed idempotently."""

from __future__ import annotations

import re
import stat

import pytest

from tests.helpers import Cli

FIELD = r"(\*|\*/\d{1,2}|\d{1,2})"
SCHEDULE_LINE = re.compile(rf"^{FIELD} {FIELD} {FIELD} {FIELD} {FIELD} \S.*$")
ENV_LINE = re.compile(r'^[A-Z_][A-Z0-9_]*=("[^"]*"|\S*)$')


def assert_valid_crontab(text: str) -> list[str]:
    """Every line is a comment, blank, NAME=value, or five fields and a command without a bare %."""
    commands = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if ENV_LINE.match(line):
            continue
        assert SCHEDULE_LINE.match(line), f"not a crontab line: {line!r}"
        assert "%" not in line, f"% starts a new line in crontab: {line!r}"
        commands.append(line)
    return commands


@pytest.fixture
def fake_crontab(tmp_path, monkeypatch):
    """A stand-in for crontab(1) that keeps the table in a file (CI machines may have no cron)."""
    table = tmp_path / "table"
    script = tmp_path / "bin" / "crontab"
    script.parent.mkdir()
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-l" ]; then
  [ -f {table} ] && exec cat {table}
  echo "no crontab for $(id -un)" >&2; exit 1
fi
cat > {table}
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}:{__import__('os').environ['PATH']}")
    return table


def test_the_block_is_valid_crontab_with_dsn_path_and_log(tmp_path):
    cli = Cli("postgresql://etl:s3cret@db.internal:5433/etl")
    result = cli("cron", "--every", "5m", "--log", str(tmp_path / "etl.log"))
    assert result.exit_code == 0
    text = result.stdout
    commands = assert_valid_crontab(text)
    assert [c.split()[:5] for c in commands] == [["*/5", "*", "*", "*", "*"]] * 2
    assert commands[0].endswith(f"schedule-next >> {tmp_path / 'etl.log'} 2>&1")
    assert commands[1].endswith(f"sweep >> {tmp_path / 'etl.log'} 2>&1")
    assert "s3cret" not in text
    assert 'ETLCTL_DSN="' in text and "host=db.internal" in text and "port=5433" in text
    assert re.search(r"^PATH=\S+/bin:/usr/local/bin:/usr/bin:/bin$", text, re.MULTILINE)
    assert text.splitlines()[0].startswith("# BEGIN etlctl") and text.splitlines()[-1] == "# END etlctl"


@pytest.mark.parametrize(("every", "fields"), [("1m", "* * * * *"), ("15m", "*/15 * * * *"), ("1h", "0 * * * *"),
                                               ("6h", "0 */6 * * *")])
def test_every(every, fields):
    text = Cli("dbname=etl")("cron", "--every", every).stdout
    assert [" ".join(c.split()[:5]) for c in assert_valid_crontab(text)] == [fields, fields]


@pytest.mark.parametrize("every", ["0m", "60m", "24h", "5s", "often", ""])
def test_bad_every_is_a_usage_error(every):
    result = Cli("dbname=etl")("cron", "--every", every)
    assert (result.exit_code, result.stderr) == (
        2, f"etlctl: invalid --every {every!r}: expected 1m to 59m or 1h to 23h\n")


def test_install_twice_leaves_one_block_and_keeps_other_entries(fake_crontab, tmp_path):
    fake_crontab.write_text("MAILTO=ops@example.com\n0 3 * * * /usr/bin/backup\n")
    cli = Cli("dbname=etl host=db")
    log = tmp_path / "logs" / "cron.log"
    first = cli("cron", "--install", "--log", str(log))
    assert (first.exit_code, first.stdout) == (0, "installed the etlctl block into your crontab (runs every 1m)\n")
    assert cli("cron", "--install", "--every", "2m", "--log", str(log)).exit_code == 0
    table = fake_crontab.read_text()
    assert table.count("# BEGIN etlctl") == 1 and table.count("# END etlctl") == 1
    assert table.startswith("MAILTO=ops@example.com\n0 3 * * * /usr/bin/backup\n\n# BEGIN etlctl")
    assert "*/2 * * * *" in table and "* * * * * " not in table
    assert_valid_crontab(table)
    assert log.parent.is_dir()


def test_install_without_crontab_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = Cli("dbname=etl")("cron", "--install")
    assert result.exit_code == 1
    assert result.stderr == "etlctl: crontab not found: install cron, or put the block `etlctl cron` prints into your scheduler\n"


def test_the_block_uses_the_pg_variables_when_they_chose_the_database():
    env = {"PGHOST": "db.internal", "PGDATABASE": "etl", "PGUSER": "etl", "PGPASSWORD": "s3cret",
           "ETLCTL_BACKOFF": "10,20"}
    result = Cli(None)("cron", "--lock-timeout", "2", env=env)
    text = result.stdout
    assert_valid_crontab(text)
    assert 'PGHOST="db.internal"' in text and 'PGDATABASE="etl"' in text and 'PGUSER="etl"' in text
    assert "ETLCTL_HOME" not in text and "s3cret" not in text
    assert 'ETLCTL_BACKOFF="10,20"' in text and "ETLCTL_LOCK_TIMEOUT=2" in text


def test_a_password_in_the_dsn_is_left_out_and_said_so():
    result = Cli("host=db user=etl password=s3cret sslpassword=k3y dbname=etl")("cron")
    assert "s3cret" not in result.stdout and "k3y" not in result.stdout
    assert result.stderr == "etlctl: the DSN's password is not written to the crontab: put it in ~/.pgpass\n"


def test_a_service_alone_chose_the_database_so_the_block_carries_it():
    result = Cli(None)("cron", env={"PGSERVICE": "etl", "PGSERVICEFILE": "/etc/etl/pg_service.conf"})
    assert result.exit_code == 0, result.stderr
    assert 'PGSERVICE="etl"' in result.stdout and 'PGSERVICEFILE="/etc/etl/pg_service.conf"' in result.stdout
    assert "ETLCTL_HOME" not in result.stdout


def test_dsn_embedded_gives_a_block_that_attaches_and_never_creates(tmp_path):
    """ETLCTL_DSN=embedded in a crontab would create a new, empty server if the old one were removed."""
    result = Cli("embedded")("cron", env={"ETLCTL_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.stderr
    assert f'ETLCTL_HOME="{tmp_path}"' in result.stdout and "ETLCTL_DSN=" not in result.stdout
