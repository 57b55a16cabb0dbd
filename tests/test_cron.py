"""etlctl cron: a crontab block whose lines each carry their own environment, quoted for sh,
with % escaped for cron; installed idempotently, keeping the rest of the crontab. Each line
is checked with `sh -n`, and its command run for real, as cron would run it."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess

import pytest

from tests.helpers import JIRA_STEPS, Cli, steps

FIELD = r"(\*|\*/\d{1,2}|\d{1,2})"
SCHEDULE_LINE = re.compile(rf"^{FIELD} {FIELD} {FIELD} {FIELD} {FIELD} (\S.*)$")


def commands(text: str) -> list[str]:
    """The command part of every schedule line; a NAME=value line fails: in a crontab it would
    apply to every line below it, not only to etlctl's."""
    found = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = SCHEDULE_LINE.match(line)
        assert match, f"not a crontab schedule line: {line!r}"
        assert not re.search(r"(?<!\\)%", line), f"an unescaped % starts a new line in crontab: {line!r}"
        found.append(match.group(6))
    return found


def block_of(table: str) -> str:
    """etlctl's block in a whole crontab."""
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# BEGIN etlctl"))
    return "\n".join(lines[start:lines.index("# END etlctl") + 1]) + "\n"


def as_cron_runs(command: str) -> str:
    """What cron hands to sh: an escaped \\% becomes %, everything else as written (crontab(5))."""
    return command.replace("\\%", "%")


def sh_n(line: str) -> None:
    checked = subprocess.run(["sh", "-n", "-c", line], capture_output=True, text=True)
    assert checked.returncode == 0, (line, checked.stderr)


@pytest.fixture
def fake_crontab(tmp_path, monkeypatch):
    """A stand-in for crontab(1) that keeps the table it is given in a file (CI machines may have no cron)."""
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
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    return table


def test_every_line_carries_its_environment_and_no_line_sets_one_for_the_others(tmp_path):
    result = Cli("postgresql://etl:s3cret@db.internal:5433/etl")("cron", "--every", "5m", "--log", str(tmp_path / "etl.log"))
    assert result.exit_code == 0
    text = result.stdout
    lines = commands(text)
    assert [line.split()[-4:] for line in lines] == [
        ["schedule-next", ">>", str(tmp_path / "etl.log"), "2>&1"], ["sweep", ">>", str(tmp_path / "etl.log"), "2>&1"]]
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["ETLCTL_DSN=host=db.internal port=5433 dbname=etl user=etl", "ETLCTL_LOG_TIMESTAMPS=1"]
    assert "s3cret" not in text
    assert not re.search(r"^(SHELL|PATH|ETLCTL_\w+|PG\w+)=", text, re.MULTILINE)
    assert text.splitlines()[0].startswith("# BEGIN etlctl") and text.splitlines()[-1] == "# END etlctl"
    for line in text.splitlines():
        sh_n(line)


@pytest.mark.parametrize(("every", "fields"), [("1m", "* * * * *"), ("15m", "*/15 * * * *"), ("1h", "0 * * * *"),
                                               ("6h", "0 */6 * * *")])
def test_every(every, fields):
    text = Cli("dbname=etl")("cron", "--every", every).stdout
    assert [line.split(" ", 5)[:5] for line in text.splitlines() if not line.startswith("#")] == [fields.split()] * 2


@pytest.mark.parametrize("every", ["0m", "60m", "24h", "5s", "often", "", "7m", "45m", "5h"])
def test_bad_every_is_a_usage_error(every):
    """An interval cron cannot repeat evenly (*/7 restarts each hour) is refused, not ticked unevenly."""
    result = Cli("dbname=etl")("cron", "--every", every)
    assert (result.exit_code, result.stderr) == (
        2, f"etlctl: invalid --every {every!r}: expected an interval cron repeats evenly: "
           "1m, 2m, 3m, 4m, 5m, 6m, 10m, 12m, 15m, 20m, 30m, or 1h, 2h, 3h, 4h, 6h, 8h, 12h\n")


def test_paths_and_values_are_quoted_and_percent_escaped(tmp_path):
    home = tmp_path / "etl home"
    dsn = "host=db.internal dbname=etl user=o'brien application_name=50%off"
    result = Cli(dsn)("cron", env={"ETLCTL_HOME": str(home), "ETLCTL_BACKOFF": "30,60 ; touch pwned"})
    assert result.exit_code == 0, result.stderr
    lines = commands(result.stdout)
    for line in lines:
        sh_n(line)
        words = shlex.split(as_cron_runs(line))
        assert words[0] == "ETLCTL_DSN=host=db.internal dbname=etl user=o\\'brien application_name=50%off"
        assert "ETLCTL_BACKOFF=30,60 ; touch pwned" in words
        assert words[-3:] == [">>", str(home / "cron.log"), "2>&1"]


@pytest.mark.parametrize("env", [{"ETLCTL_HOME": "/tmp/a\nb"}, {"ETLCTL_BACKOFF": "30\n* * * * * touch x"}])
def test_a_value_cron_cannot_carry_is_refused(env):
    result = Cli("embedded" if "ETLCTL_HOME" in env else "dbname=etl")("cron", env=env)
    assert result.exit_code == 2
    assert "holds a control character (a newline?): a crontab line cannot carry it" in result.stderr


def test_installed_lines_run_for_real_and_log_with_timestamps(db, fake_crontab, tmp_path):
    """As cron would: each command part, \\% unescaped, through sh with cron's bare environment.
    The log path has a space and a %; a due job makes schedule-next say something."""
    tenant = db.tenant("acme")
    integration = db.integration(tenant)
    job = db.job("Jira", tenant, integration, status={"overall": "READY", "steps": steps(JIRA_STEPS, "idle")})
    fake_crontab.write_text("MAILTO=ops@example.com\n0 3 * * * /usr/bin/backup\n")
    log = tmp_path / "etl logs" / "100% cron.log"
    installed = Cli(db.dsn)("cron", "--install", "--log", str(log))
    assert (installed.exit_code, installed.stdout) == (0, "installed the etlctl block into your crontab (runs every 1m)\n")
    table = fake_crontab.read_text()
    assert table.startswith("MAILTO=ops@example.com\n0 3 * * * /usr/bin/backup\n\n# BEGIN etlctl")
    for line in table.splitlines():
        sh_n(line)
    cron_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHELL": "/bin/sh", "LANG": "C.UTF-8"}
    for command in commands(block_of(table)):
        ran = subprocess.run(["/bin/sh", "-c", as_cron_runs(command)], env=cron_env, capture_output=True, text=True,
                             timeout=120)
        assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")
    logged = log.read_text().splitlines()
    assert len(logged) == 1, logged
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d started job {job} \(Jira\): READY -> RUNNING, "
                        r"run \S+, queued jira_projects_and_issue_types extraction", logged[0])
    assert db.status(job)["overall"] == "RUNNING"


def test_install_twice_leaves_one_block_and_keeps_other_entries(fake_crontab, tmp_path):
    fake_crontab.write_text("MAILTO=ops@example.com\n0 3 * * * /usr/bin/backup\n")
    cli = Cli("dbname=etl host=db")
    log = tmp_path / "logs" / "cron.log"
    assert cli("cron", "--install", "--log", str(log)).exit_code == 0
    assert cli("cron", "--install", "--every", "2m", "--log", str(log)).exit_code == 0
    table = fake_crontab.read_text()
    assert table.count("# BEGIN etlctl") == 1 and table.count("# END etlctl") == 1
    assert table.startswith("MAILTO=ops@example.com\n0 3 * * * /usr/bin/backup\n\n# BEGIN etlctl")
    assert "*/2 * * * *" in table and "* * * * * " not in table
    assert len(commands(block_of(table))) == 2
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
    words = shlex.split(commands(result.stdout)[0])
    assert words[:6] == ["PGHOST=db.internal", "PGDATABASE=etl", "PGUSER=etl", "ETLCTL_BACKOFF=10,20",
                         "ETLCTL_LOCK_TIMEOUT=2", "ETLCTL_LOG_TIMESTAMPS=1"]
    assert "ETLCTL_HOME" not in result.stdout and "s3cret" not in result.stdout


def test_a_password_in_the_dsn_is_left_out_and_said_so():
    result = Cli("host=db user=etl password=s3cret sslpassword=k3y dbname=etl")("cron")
    assert "s3cret" not in result.stdout and "k3y" not in result.stdout
    assert result.stderr == "etlctl: the DSN's password is not written to the crontab: put it in ~/.pgpass\n"


def test_a_service_alone_chose_the_database_so_the_block_carries_it():
    result = Cli(None)("cron", env={"PGSERVICE": "etl", "PGSERVICEFILE": "/etc/etl/pg_service.conf"})
    assert result.exit_code == 0, result.stderr
    words = shlex.split(commands(result.stdout)[0])
    assert words[:2] == ["PGSERVICE=etl", "PGSERVICEFILE=/etc/etl/pg_service.conf"]
    assert "ETLCTL_HOME" not in result.stdout


def test_dsn_embedded_gives_a_block_that_attaches_and_never_creates(tmp_path):
    """ETLCTL_DSN=embedded in a crontab would create a new, empty server if the old one were removed."""
    result = Cli("embedded")("cron", env={"ETLCTL_HOME": str(tmp_path / "my home")})
    assert result.exit_code == 0, result.stderr
    words = shlex.split(commands(result.stdout)[0])
    assert words[0] == f"ETLCTL_HOME={tmp_path / 'my home'}" and "ETLCTL_DSN=" not in result.stdout


def test_the_one_place_for_the_lines_environment_is_a_list_of_pairs():
    """Another setting for the ticks (the broker's) is one more pair in actions.cron.environment."""
    from etlctl.actions import cron
    from etlctl.store.settings import ConnectionSettings

    pairs, notes = cron.environment(ConnectionSettings(dsn="dbname=etl"), environ={})
    assert pairs == [("ETLCTL_DSN", "dbname=etl"), ("ETLCTL_LOG_TIMESTAMPS", "1")]
    assert notes == ["# A password is never written here: keep it in ~/.pgpass (or PGPASSFILE)."]


def test_the_broker_the_command_found_is_carried_without_its_password():
    """The ticks publish (schedule-next) and look at the queues (sweep): cron's etlctl must reach the same broker."""
    result = Cli("dbname=etl")("cron", env={"ETLCTL_AMQP_URL": "amqp://etl:s3cret@mq.internal:5672/pulse_etl"})
    assert result.exit_code == 0, result.stderr
    words = shlex.split(commands(result.stdout)[0])
    assert words[:3] == ["ETLCTL_DSN=dbname=etl", "ETLCTL_AMQP_URL=amqp://etl@mq.internal:5672/pulse_etl",
                         "ETLCTL_LOG_TIMESTAMPS=1"]
    assert "s3cret" not in result.stdout
    assert result.stderr == ("etlctl: the broker's password is not written to the crontab: put it in a 0600 file named "
                             "by ETLCTL_AMQP_PASSWORD_FILE\n")
    assert "# The broker's password is never written here: keep it in ETLCTL_AMQP_PASSWORD_FILE." in result.stdout


def test_the_existing_systems_rabbitmq_variables_are_carried_and_the_password_file_instead_of_the_password(tmp_path):
    secret = tmp_path / "amqp-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    env = {"RABBITMQ_HOST": "mq.internal", "RABBITMQ_USER": "etl", "RABBITMQ_PASSWORD": "s3cret",
           "RABBITMQ_VHOST": "pulse_etl", "ETLCTL_AMQP_PASSWORD_FILE": str(secret)}
    result = Cli("dbname=etl")("cron", "--amqp-heartbeat", "30", env=env)
    assert result.exit_code == 0, result.stderr
    words = shlex.split(commands(result.stdout)[0])
    assert words[:6] == ["ETLCTL_DSN=dbname=etl", "RABBITMQ_HOST=mq.internal", "RABBITMQ_USER=etl",
                         "RABBITMQ_VHOST=pulse_etl", f"ETLCTL_AMQP_PASSWORD_FILE={secret}", "ETLCTL_AMQP_HEARTBEAT=30"]
    assert "s3cret" not in result.stdout and result.stderr == ""
