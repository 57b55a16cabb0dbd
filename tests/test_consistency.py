"""One meaning per option across commands: --limit (at most N rows shown or acted on,
with a maximum), --tenant (only that tenant's jobs; an unknown one exits 5)."""

from __future__ import annotations

import pytest

from tests.helpers import Cli

LIMITED = [["status"], ["history", "1"], ["queue", "ls"], ["schedule-next"]]


@pytest.mark.parametrize("command", LIMITED)
def test_a_limit_above_the_maximum_is_one_line_exit_2(command):
    result = Cli("dbname=never_reached")(*command, "--limit", "99999999999999999999")
    assert (result.exit_code, result.stderr) == (
        2, "etlctl: error: Invalid value for '--limit': 99999999999999999999 is not in the range 1<=x<=1000000. "
           f"(see `etlctl {' '.join(command[:2] if command[0] == 'queue' else command[:1])} --help`)\n")


@pytest.mark.parametrize(("command", "counted"), [
    (["status"], "At most N jobs listed without JOB"),
    (["history"], "At most N changes shown, the newest"),
    (["queue", "ls"], "At most N messages shown, the newest"),
    (["schedule-next"], "At most N jobs started in this tick"),
])
def test_each_help_says_what_its_limit_counts(command, counted):
    text = " ".join(Cli(None)(*command, "--help").stdout.split())
    assert f"--limit N {counted}" in text and "1<=x<=1000000" in text


def test_every_listing_says_when_it_shows_fewer_than_there_are(db, cli):
    job = db.job("Jira", status={"overall": "READY", "steps": {}})
    db.job("Jira", status={"overall": "READY", "steps": {}})
    for n in range(3):
        db.sql("INSERT INTO etlctl.queue (job_id, tenant_id, token, step, phase, message) "
               "SELECT id, tenant_id, %s, 's', 'extraction', '{}' FROM etl_jobs WHERE id = %s", f"t{n}", job)
        db.sql("INSERT INTO etlctl.audit (job_id, command, host, pid) VALUES (%s, 'step', 'vm', 1)", job)
    status = cli("status", "--limit", "1")
    assert status.stderr == "showing the first 1 job; there are more (use --limit or --tenant)\n"
    queue = cli("queue", "ls", "--limit", "2", "--json")
    assert [row["token"] for row in queue.json()] == ["t1", "t2"]
    assert queue.stderr == "showing the newest 2 messages; there are more (use --limit)\n"
    history = cli("history", job, "--limit", "2")
    assert history.stderr == "showing the newest 2 of 3 changes (use --limit or --since)\n"
    assert cli("queue", "ls", "--limit", "3").stderr == ""


# --- --tenant -------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "message"), [
    *[([name], "no tenant 'nobody'") for name in ("doctor", "metrics", "sweep", "history", "status", "schedule-next")],
    (["history", "1"], "no job 1 in tenant 'nobody'"),  # with JOB, --tenant picks the job: none there
])
def test_an_unknown_tenant_exits_5_everywhere(db, cli, command, message):
    db.job("Jira", db.tenant("acme"))
    result = cli(*command, "--tenant", "nobody")
    assert (result.exit_code, result.stdout, result.stderr) == (5, "", f"etlctl: {message}\n")


@pytest.fixture
def two_tenants(db):
    """acme and beta, each with a job FINISHED long ago (stuck: doctor, metrics and sweep all see it)."""
    from tests.helpers import finished

    ids = {}
    for name in ("acme", "beta"):
        tenant = db.tenant(name)
        ids[name] = db.job("Jira", tenant, db.integration(tenant), status=finished(),
                           last_run_finished_at="2026-11-28 09:00:00", schedule_interval_minutes=60)
    return ids


def test_doctor_with_a_tenant_reports_only_that_tenants_jobs(cli, two_tenants, frozen):
    everyone = cli("doctor", "--json").json()
    assert sorted(j for f in everyone["findings"] for j in f["job_ids"]) == sorted(two_tenants.values())
    acme = cli("doctor", "--tenant", "acme", "--json").json()
    assert [j for f in acme["findings"] for j in f["job_ids"]] == [two_tenants["acme"]]
    assert acme["jobs_checked"] == 1


def test_doctor_of_a_tenant_without_jobs_says_so(db, cli, frozen):
    db.tenant("empty")
    result = cli("doctor", "--tenant", "empty")
    assert result.exit_code == 0
    assert result.stdout.startswith("[note] No jobs: tenant empty has no jobs: there was nothing to check\n")
    assert result.stdout.endswith("no problems found (0 jobs checked, 1 note)\n")


def test_metrics_with_a_tenant_count_only_that_tenants_jobs(cli, two_tenants, frozen):
    text = cli("metrics", "--tenant", "beta").stdout
    assert 'tenant="beta"' in text and 'tenant="acme"' not in text
    assert f'job_id="{two_tenants["beta"]}"' in text and f'job_id="{two_tenants["acme"]}"' not in text


def test_sweep_with_a_tenant_advances_only_that_tenants_jobs(db, cli, two_tenants, frozen):
    result = cli("sweep", "--tenant", "acme", "--json")
    assert [row["job_id"] for row in result.json()] == [two_tenants["acme"]]
    assert "reset_stage" in db.status(two_tenants["acme"]) and "reset_stage" not in db.status(two_tenants["beta"])
    assert [row["job_id"] for row in cli("sweep", "--json").json()] == [two_tenants["beta"]]


def test_history_without_a_job_shows_every_jobs_changes_or_one_tenants(db, cli, two_tenants, frozen):
    assert cli("sweep").exit_code == 0
    every = cli("history", "--json").json()
    assert sorted(row["job_id"] for row in every) == sorted(two_tenants.values())
    beta = cli("history", "--tenant", "beta")
    lines = beta.stdout.splitlines()
    assert lines[0].split()[:3] == ["JOB", "TIME", "FROM"]
    assert [line.split()[0] for line in lines[2:]] == [str(two_tenants["beta"])]
    db.tenant("quiet")
    assert cli("history", "--tenant", "quiet").stderr == "tenant quiet: no audited changes\n"


# --- help, typos, completion --------------------------------------------------------------


def every_command_path() -> list[list[str]]:
    """Every command and group of etlctl, as the words that name it."""
    import click

    from etlctl.cli import COMMANDS, cli

    found = []

    def walk(command, path):
        found.append(path)
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])

    ctx = click.Context(cli)
    for name in COMMANDS:
        walk(cli.get_command(ctx, name), [name])
    return found


def test_the_walk_finds_every_command_and_subcommand():
    paths = every_command_path()
    assert ["queue", "claim"] in paths and ["db", "stop"] in paths and ["completion"] in paths
    assert len(paths) >= 24  # 19 commands, 3 of queue and 2 of db when this was written; more may come


@pytest.mark.parametrize("path", every_command_path(), ids=" ".join)
def test_every_help_carries_an_example(path):
    result = Cli(None)(*path, "--help")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "  Example:" in lines, f"`etlctl {' '.join(path)} --help` has no example"
    example = lines[lines.index("  Example:") + 1].strip()
    assert example.startswith(("etlctl ", "eval ", "ETLCTL_")), example


@pytest.mark.parametrize("path", every_command_path(), ids=" ".join)
def test_every_option_has_a_description(path):
    import click

    from etlctl.cli import cli

    command, ctx = cli, click.Context(cli)
    for word in path:
        command = command.get_command(ctx, word)
        ctx = click.Context(command, parent=ctx)
    undescribed = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.help]
    assert undescribed == [], f"`etlctl {' '.join(path)}`: options without a description: {undescribed}"


@pytest.mark.parametrize(("typo", "meant"), [("stauts", "status"), ("dcotor", "doctor"), ("wait-and-rest", "wait-and-reset")])
def test_a_top_level_typo_gets_did_you_mean(typo, meant):
    result = Cli(None)(typo)
    assert (result.exit_code, result.stderr) == (
        2, f"etlctl: error: No such command '{typo}'. Did you mean '{meant}'? (see `etlctl --help`)\n")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_script_for_each_shell(shell):
    result = Cli(None)("completion", shell)
    assert result.exit_code == 0 and "_ETLCTL_COMPLETE" in result.stdout
    assert f"{shell}_complete" in result.stdout


def test_completion_of_an_unknown_shell_is_a_usage_error():
    result = Cli(None)("completion", "tcsh")
    assert result.exit_code == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.stderr


def complete(words: str, env: dict, timeout: float = 60) -> tuple[list[str], object]:
    """What bash's completion gets for the last word of ``words``, from a real etlctl process."""
    import subprocess
    import sys

    args = words.split(" ")
    full = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    full.update(env, _ETLCTL_COMPLETE="bash_complete", COMP_WORDS=words, COMP_CWORD=str(len(args) - 1))
    proc = subprocess.run([sys.executable, "-m", "etlctl"], env=full, capture_output=True, text=True, timeout=timeout)
    values = [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line.startswith("plain,")]
    return values, proc


def test_completion_offers_jobs_and_tenants_from_the_database(db):
    acme, beta = db.tenant("acme"), db.tenant("beta")
    jira = db.job("Jira", acme)
    db.job("Jira Cloud", beta)
    github = db.job("GitHub", beta)
    env = {"ETLCTL_DSN": db.dsn}
    values, proc = complete("etlctl status ", env)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert values[:3] == [str(jira), str(jira + 1), str(github)] and {"Jira", "Jira Cloud", "GitHub"} <= set(values)
    assert complete("etlctl why ji", env)[0] == ["Jira", "Jira Cloud"]
    assert complete("etlctl why --tenant beta J", env)[0] == ["Jira Cloud"]
    assert complete("etlctl doctor --tenant a", env)[0] == ["acme"]
    assert complete("etlctl st", env)[0] == ["status", "step"]


def test_completion_without_a_database_offers_nothing_and_creates_nothing(tmp_path):
    home = tmp_path / "home"
    values, proc = complete("etlctl status ", {"ETLCTL_HOME": str(home)})
    assert (values, proc.returncode, proc.stderr) == ([], 0, "")
    assert not home.exists()


def test_completion_with_an_unreachable_database_offers_nothing_quietly(unused_port):
    values, proc = complete("etlctl status ", {"ETLCTL_DSN": f"host=127.0.0.1 port={unused_port} dbname=x"})
    assert (values, proc.returncode, proc.stderr) == ([], 0, "")


def test_completion_never_waits_long_for_a_server_that_does_not_answer():
    """A listener that accepts and then says nothing: libpq's connect timeout (2 s) ends it."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        values, proc = complete("etlctl status ", {"ETLCTL_DSN": f"host=127.0.0.1 port={port} dbname=x"}, timeout=30)
    assert (values, proc.returncode, proc.stderr) == ([], 0, "")


def test_completion_never_starts_a_stopped_embedded_server(embedded_home):
    from etlctl.store import embedded
    from tests.helpers import run_process

    env = {"ETLCTL_HOME": str(embedded_home)}
    assert run_process(["db", "init"], None, env).exit_code == 0
    assert run_process(["db", "stop"], None, env).exit_code == 0
    values, proc = complete("etlctl status ", env)
    assert (values, proc.returncode, proc.stderr) == ([], 0, "")
    assert embedded.running(embedded_home) is None


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The README's list: every command that changes the database has --json and --dry-run; these
# three change something else (the embedded server, your crontab, a file) and have neither.
CHANGE_THE_DATABASE = [["complete"], ["step"], ["wait-and-reset"], ["reset"], ["sweep"], ["schedule-next"],
                       ["queue", "claim"], ["queue", "done"], ["db", "init"]]
CHANGE_SOMETHING_ELSE = [["db", "stop"], ["cron"], ["metrics"]]


@pytest.mark.parametrize("path", CHANGE_THE_DATABASE, ids=" ".join)
def test_every_command_that_changes_the_database_has_json_and_dry_run(path):
    text = Cli(None)(*path, "--help").stdout
    assert "--json" in text and "--dry-run" in text


@pytest.mark.parametrize("path", CHANGE_SOMETHING_ELSE, ids=" ".join)
def test_the_commands_that_change_something_else_are_the_ones_the_readme_names(path):
    text = Cli(None)(*path, "--help").stdout
    assert "--dry-run" not in text
    readme = " ".join((__import__("tests.helpers", fromlist=["REPO"]).REPO / "README.md").read_text().split())
    assert "Three commands change something else and have neither: `db stop`" in readme
    assert f"`{' '.join(path)}" in readme
