"""Output is data, never code (issue 11, §2).

- Every command etlctl prints for someone to run (doctor's fixes, why's
  hints) quotes each argument: the README's own ``doctor --json | jq ... | sh``
  recipes run, under a real ``sh``, with hostile step names and tokens, and only
  etlctl runs, with exactly the arguments meant (a fake ``etlctl`` on PATH
  records them; ``touch`` is the real one, and nothing gets touched).
- Control characters in documents (a title change, a clear screen, a line
  that pretends to be another) reach the terminal visibly, through every text
  view; JSON keeps them as they are.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from etlctl.core.job import short_token

from tests.helpers import JIRA_STEPS, PHASES, REPO, finished

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW

# Names and tokens that are shell code when pasted unquoted.
HOSTILE_STEPS = ["pages;touch pwned-1;#", "a$(touch pwned-2)", "`touch pwned-3`", "it's \"quoted\"", "two\nlines",
                 "back\\slash $HOME"]
HOSTILE_TOKEN = "tok';touch pwned-4;'"


def naive(seconds: float) -> str:
    return (NOW + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def recipes() -> dict[str, str]:
    """The README's doctor recipes, as written there: name -> the jq filter."""
    readme = (REPO / "README.md").read_text()
    found = re.findall(r"^\s*etlctl doctor --json \| jq -r '([^']+)'( \| sh)?", readme, re.M)
    return {"list" if not sh else "run": jq for jq, sh in found}


def jq(filter_: str, text: str) -> str:
    """jq when it is installed; else the same two filters in Python (nothing to install for the test)."""
    if shutil.which("jq"):
        return subprocess.run(["jq", "-r", filter_], input=text, capture_output=True, text=True, check=True).stdout
    report = json.loads(text)
    if filter_ == ".findings[].fix[].command":
        return "".join(fix["command"] + "\n" for f in report["findings"] for fix in f["fix"])
    assert filter_ == '.findings[] | select(.code == "stuck_finished" and .details.check_passes) | .fix[0].command'
    return "".join(f["fix"][0]["command"] + "\n" for f in report["findings"]
                   if f["code"] == "stuck_finished" and f["details"].get("check_passes"))


@pytest.fixture
def fake_bin(tmp_path):
    """A PATH whose etlctl and psql only record their arguments (one JSON list a line)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "ran.jsonl"
    for name in ("etlctl", "psql"):
        script = folder / name
        script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                          f"open({str(record)!r}, 'a').write(json.dumps([{name!r}] + sys.argv[1:]) + '\\n')\n")
        script.chmod(0o755)
    return folder, record


def run_under_sh(commands: str, fake_bin, workdir) -> list[list[str]]:
    folder, record = fake_bin
    env = {**os.environ, "PATH": f"{folder}:/usr/bin:/bin"}
    done = subprocess.run(["sh"], input=commands, capture_output=True, text=True, cwd=workdir, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_the_readme_recipes_exist():
    assert recipes() == {
        "list": ".findings[].fix[].command",
        "run": '.findings[] | select(.code == "stuck_finished" and .details.check_passes) | .fix[0].command'}


def test_doctor_fixes_run_under_sh_with_hostile_names_run_only_etlctl(db, cli, frozen, fake_bin, tmp_path):
    tenant = db.tenant("acme")
    jobs = {}
    for n, step in enumerate(HOSTILE_STEPS):
        # FINISHED 2 minutes ago, its first check failed on a step still running: "Timer keeps retrying".
        status = {"overall": "FINISHED", "token": HOSTILE_TOKEN, "reset_stage": "check", "reset_attempt": 1,
                  "reset_deadline": (NOW + timedelta(seconds=30)).isoformat(), "reset_token": HOSTILE_TOKEN,
                  "steps": {step: {"order": 1, "extraction": "finished", "transform": "finished", "embedding": "running"}}}
        jobs[step] = db.job(f"Job {n}", tenant, status=status, last_run_finished_at=naive(-120))
    stuck = db.job("Stuck", tenant, status=finished(token=HOSTILE_TOKEN), last_run_finished_at=naive(-7200))
    inactive = db.tenant("it's off", active=False)
    db.job("Off", inactive, db.integration(inactive), next_run=naive(-3600))

    report = cli("doctor", "--json")
    assert report.exit_code == 3, report.stderr
    workdir = tmp_path / "work"
    workdir.mkdir()

    ran = run_under_sh(jq(recipes()["list"], report.stdout), fake_bin, workdir)
    for step, job in jobs.items():
        # doctor gives the run's first 8 characters ("tok';tou": still a quote to survive), as history shows it.
        assert ["etlctl", "step", str(job), step, "embedding", "finished", "--token", short_token(HOSTILE_TOKEN)] in ran, step
    assert ["etlctl", "reset", str(stuck)] in ran
    assert ["psql", "-c", f"UPDATE tenants SET active = true WHERE id = {inactive}"] in ran
    assert {argv[0] for argv in ran} == {"etlctl", "psql"}
    assert list(workdir.iterdir()) == []  # nothing but etlctl and psql ran: no pwned-*

    (fake_bin[1]).unlink()
    assert run_under_sh(jq(recipes()["run"], report.stdout), fake_bin, workdir) == [["etlctl", "reset", str(stuck)]]
    assert list(workdir.iterdir()) == []


def test_the_run_recipe_resets_for_real(db, cli, frozen, tmp_path):
    """The README's recipe end to end, with the real etlctl: the stuck job whose check passes is READY after it."""
    tenant = db.tenant("acme")
    stuck = db.job("pages;touch pwned;#", tenant, status=finished(token=HOSTILE_TOKEN), last_run_finished_at=naive(-7200))
    commands = jq(recipes()["run"], cli("doctor", "--json").stdout)
    assert commands == f"etlctl reset {stuck}\n"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "etlctl").symlink_to(REPO / ".venv" / "bin" / "etlctl") if (REPO / ".venv" / "bin" / "etlctl").exists() \
        else (bin_dir / "etlctl").symlink_to(shutil.which("etlctl"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", ETLCTL_DSN=db.dsn)
    done = subprocess.run(["sh"], input=commands, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert db.status(stuck)["overall"] == "READY"


def test_why_hints_are_quoted_commands(db, cli, frozen):
    from etlctl.core import shell

    job = db.job("Jira", db.tenant("acme"), status={**finished(), "reset_stage": "gave_up", "reset_attempt": 4,
                                                     "reset_gave_up_at": NOW.isoformat(), "reset_token": "tok-1"})
    lines = cli("why", job).stdout.splitlines()
    assert lines[-1] == f"  next     nothing happens by itself: run `{shell.command('etlctl', 'reset', job)}`"
    assert shell.command("etlctl", "step", 7, "pages;touch x;#", "--token", "a'b") == \
        "etlctl step 7 'pages;touch x;#' --token \"a'b\""
    for hostile in HOSTILE_STEPS + [HOSTILE_TOKEN, "", "-", "--force", "a\u202eb"]:
        assert shlex.split(shell.command("etlctl", hostile)) == ["etlctl", hostile]


# --- control characters ----------------------------------------------------------------------------

TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
CLEAR = "\x1b[2J\x1b[H"  # clears the screen
CSI = "\x9b31m"  # the 8-bit form of ESC [
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def hostile_job(db, tenant, name=f"Jira{TITLE}"):
    step = f"x{CLEAR}y"
    status = {"overall": "FINISHED", "token": f"tok{CSI}", "reset_stage": "check", "reset_attempt": 1,
              "reset_deadline": (NOW - timedelta(seconds=3600)).isoformat(), "reset_token": f"tok{CSI}",
              "steps": {step: {"order": 1, "extraction": "finished", "transform": "finished", "embedding": "run\u202eing"},
                        JIRA_STEPS[0]: {p: "running" for p in PHASES}}}
    return db.job(name, tenant, status=status, last_run_finished_at=naive(-7200), error_message=f"boom{CLEAR}\nfake line")


@pytest.mark.parametrize("args", [("why", "{job}"), ("doctor",), ("status", "{job}"), ("status",), ("check", "{job}"),
                                  ("history", "{job}"), ("sweep", "-v"), ("reset", "{job}")])
def test_control_characters_in_documents_reach_the_terminal_visibly(db, cli, frozen, args):
    job = hostile_job(db, db.tenant(f"acme{TITLE}"))
    cli("step", job, JIRA_STEPS[0], "embedding", "finished")  # an audit row with the hostile token, for history
    result = cli(*[a.format(job=job) for a in args])
    assert result.exit_code in (0, 3, 4), result.stderr
    shown = result.stdout + result.stderr
    assert shown and not RAW.search(shown), RAW.search(shown)
    assert not any(line.lstrip().startswith("fake line") for line in shown.splitlines())  # never a line of its own


def test_the_escapes_read_as_what_the_document_holds(db, cli, frozen):
    job = hostile_job(db, db.tenant("acme"))
    text = cli("status", job).stdout
    assert "Jira\\x1b]0;pwned\\x07" in text
    assert "x\\x1b[2J\\x1b[Hy" in text
    assert "run\\u202eing" in text
    assert "error          boom\\x1b[2J\\x1b[H\\nfake line" in text
    assert "tok\\x9b31m" in text
    # JSON is unaffected: the document's own characters, as JSON escapes them.
    record = cli("status", job, "--json").json()
    assert record["job_name"] == f"Jira{TITLE}" and record["error_message"] == f"boom{CLEAR}\nfake line"
    assert f"x{CLEAR}y" in record["status"]["steps"]


def test_visible_escapes_every_control_and_bidirectional_character():
    from etlctl.views.render import visible

    assert visible("a\x1b[2Jb\x07\n\t\r\x7f\x85\u202e\u2066\u2028z") == "a\\x1b[2Jb\\x07\\n\\t\\r\\x7f\\x85\\u202e\\u2066\\u2028z"
    assert visible("plain 日本 é 🚀 ‑") == "plain 日本 é 🚀 ‑"
