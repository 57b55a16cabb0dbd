"""The shell examples of README.md and RUNBOOK.md run, and print what the docs show.

HOW TO MARK AN EXAMPLE. Every fenced block whose info string is empty, `sh`,
`shell`, `bash` or `console` is a shell example, and the line right above its
opening fence must say what to do with it (an HTML comment: GitHub does not
show it):

    <!-- example: run scenario=NAME -->
    <!-- example: run scenario=NAME at=2026-11-28T10:30:20-05:00 -->
    <!-- example: skip: WHY IT CANNOT RUN HERE -->

Other blocks (```sql, ```json, ```ini, ```text, ```cron, ...) are not run.

`run` runs the block's commands, in-process, against the database of its
scenario, `tests/fixtures/examples/NAME.sql`, seeded on a fresh database with
etlctl's schema. The file's header says when the scenario starts and its
environment (besides ETLCTL_DSN, which names the database):

    -- at: 2026-11-28T10:29:40-05:00
    -- env: ETLCTL_DB_TIMEZONE=America/New_York

Blocks of one scenario in one file share its database and clock, in document
order: the clock is frozen, moves only when a command waits (wait-and-reset,
check --retry), and `at=` sets it for a block. To add an example, mark its
block, and add the rows it needs to a scenario (or a new one).

- In a `console` block, each `$ COMMAND` line runs; the lines after it, up to
  the next `$`, are what it prints (stdout and stderr together, as a terminal
  shows them); `$ echo $?` shows the previous command's exit code.
- In any other block, each line is a command (a `# comment` after it is not
  part of it) and its output is not compared.
- A command whose exit code is shown must exit with it; any other must exit
  neither 1 (unexpected error) nor 2 (usage error): its command line is valid.
- A command is `etlctl ARGS`, maybe after NAME=value assignments. Anything else
  (psql, make, export, a pipe) cannot run here: mark the block skip.

Output must match exactly, with these exceptions only:

- trailing spaces at the end of a line are ignored;
- a line `…` alone in the shown output stands for any number of lines;
- a UUID (a run token that schedule-next makes) matches any UUID;
- the path of the etlctl running the tests shows as /opt/etlctl/.venv/bin/etlctl;
- the scenario's database, where a fix names it (`etlctl --dsn '...'`, `psql '...'`), shows as
  `host=db.internal dbname=etl user=etl`, the README's.

A failure names the file, the line of the example's fence and the command, and
shows a diff of what the docs show against what etlctl printed.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import freezegun
import pytest
from click.testing import CliRunner

from etlctl.store import clock
from tests.helpers import REPO, FrozenClock

DOCS = ("README.md", "RUNBOOK.md")
SCENARIOS = Path(__file__).parent / "fixtures" / "examples"
SHELL_INFOS = ("", "sh", "shell", "bash", "console")
MARKER = re.compile(r"^\s*<!-- example: (run(?P<options>(?: [a-z]+=\S+)*)|skip: (?P<why>.+?)) -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>\S*)\s*$")
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
INSTALLED = "/opt/etlctl/.venv/bin/etlctl"
DOCS_DSN = "host=db.internal dbname=etl user=etl"
UNCHECKED = object()  # an exit code no `$ echo $?` shows: anything but 1 and 2


@dataclass
class Command:
    line: int  # in the file
    text: str
    shown: list[str] | None = None  # console: what it prints; None: not compared
    exit_code: object = UNCHECKED


@dataclass
class Example:
    path: str
    line: int  # of the opening fence
    info: str
    marker: str | None  # the marker line, None when there is none
    commands: list[Command] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    skip: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def examples(path: str) -> list[Example]:
    """The shell examples of one file, with their markers and commands."""
    lines = (REPO / path).read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, info = fence.group("indent"), fence.group("info")
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = [(j + 1, line[len(indent):] if line.startswith(indent) else line.lstrip())
                for j, line in enumerate(lines[i + 1:end], start=i + 1)]
        if info in SHELL_INFOS:
            above = lines[i - 1] if i > 0 else ""
            marker = MARKER.match(above)
            example = Example(path, i + 1, info, above.strip() if marker else None)
            if marker and marker.group("why"):
                example.skip = marker.group("why")
            elif marker:
                example.options = dict(pair.split("=", 1) for pair in marker.group("options").split())
            example.commands = _console(body) if info == "console" else _plain(body)
            found.append(example)
        i = end + 1
    return found


def _console(body: list[tuple[int, str]]) -> list[Command]:
    commands: list[Command] = []
    for number, text in body:
        if text.startswith("$ "):
            if text.strip() == "$ echo $?":
                commands.append(Command(number, "echo $?", []))
            else:
                commands.append(Command(number, text[2:], []))
        elif commands:
            commands[-1].shown.append(text)
    # `$ echo $?` shows the exit code of the command before it.
    out: list[Command] = []
    for command in commands:
        if command.text == "echo $?" and out:
            out[-1].exit_code = int(command.shown[0])
        else:
            out.append(command)
    return out


def _plain(body: list[tuple[int, str]]) -> list[Command]:
    commands = []
    for number, text in body:
        words = shlex.split(text, comments=True)
        if words:
            commands.append(Command(number, shlex.join(words)))
    return commands


# --- every example is marked ---------------------------------------------------------------


@pytest.mark.parametrize("path", DOCS)
def test_every_shell_example_is_marked_run_or_skip_with_a_reason(path):
    unmarked = [f"{e.where} (```{e.info})" for e in examples(path) if e.marker is None]
    assert unmarked == [], (
        "these shell examples have no marker on the line above their fence; add "
        "`<!-- example: run scenario=NAME -->` or `<!-- example: skip: why -->` (see tests/test_docs.py): "
        + ", ".join(unmarked))


@pytest.mark.parametrize("path", DOCS)
def test_every_runnable_example_names_a_scenario_that_exists(path):
    for example in examples(path):
        if example.marker is None or example.skip is not None:
            continue
        name = example.options.get("scenario")
        assert name, f"{example.where}: `run` needs scenario=NAME (a file in {SCENARIOS.relative_to(REPO)})"
        assert (SCENARIOS / f"{name}.sql").is_file(), f"{example.where}: no scenario file {name}.sql in {SCENARIOS}"
        for command in example.commands:
            words = shlex.split(command.text)
            program = next((w for w in words if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)), None)
            assert program == "etlctl" and "|" not in words, (
                f"{example.where}: line {command.line} runs `{command.text}`, which this test cannot run: "
                "mark the block `<!-- example: skip: why -->`")


# --- running them --------------------------------------------------------------------------


def scenarios() -> list[tuple[str, str]]:
    seen = []
    for path in DOCS:
        for example in examples(path):
            key = (path, example.options.get("scenario"))
            if example.skip is None and example.marker is not None and key[1] and key not in seen:
                seen.append(key)
    return seen


@dataclass
class Scenario:
    seed: str
    at: datetime
    env: dict


def load_scenario(name: str) -> Scenario:
    text = (SCENARIOS / f"{name}.sql").read_text(encoding="utf-8")
    at = re.search(r"^-- at: (\S+)$", text, re.MULTILINE)
    assert at, f"{name}.sql: its header needs `-- at: ISO-TIME-WITH-OFFSET`"
    env = dict(line.split("=", 1) for line in re.findall(r"^-- env: (\S+=.*)$", text, re.MULTILINE))
    return Scenario(text, datetime.fromisoformat(at.group(1)), env)


def normalise(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        line = UUID.sub("<uuid>", line.rstrip())
        out.append(line)
    return out


def matches(shown: list[str], printed: list[str]) -> bool:
    """Line by line; a shown `…` line matches any number of printed lines."""
    if not shown:
        return not printed
    if shown[0] == "…":
        return any(matches(shown[1:], printed[k:]) for k in range(len(printed) + 1))
    return bool(printed) and shown[0] == printed[0] and matches(shown[1:], printed[1:])


def run_command(command: Command, env: dict) -> tuple[int, list[str]]:
    from etlctl.actions.cron import executable
    from etlctl.cli import cli
    from etlctl.store.reach import dsn_without_password

    words = shlex.split(command.text)
    assignments = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    result = CliRunner().invoke(cli, words[1:], env={**env, **assignments}, catch_exceptions=False)
    printed = result.output.replace(" ".join(shlex.quote(p) for p in executable()), INSTALLED)
    printed = printed.replace(dsn_without_password(env["ETLCTL_DSN"])[0], DOCS_DSN)
    return result.exit_code, printed.splitlines()


@pytest.mark.parametrize(("path", "name"), scenarios(), ids=[f"{p}:{n}" for p, n in scenarios()])
def test_the_examples_run_and_print_what_the_docs_show(path, name, db, monkeypatch):
    scenario = load_scenario(name)
    db.conn.execute(scenario.seed)
    env = {"ETLCTL_DSN": db.dsn, **scenario.env}
    now = scenario.at
    for example in examples(path):
        if example.skip is not None or example.options.get("scenario") != name:
            continue
        if "at" in example.options:
            now = datetime.fromisoformat(example.options["at"])
        with freezegun.freeze_time(now, ignore=["psycopg", "psycopg_binary"]) as frozen:
            # doctor's clock-skew check compares this host's real clock with the database's: set inside
            # the freeze, which would otherwise replace this very function with its fake clock.
            monkeypatch.setattr("etlctl.oncall.doctor.host_clock", freezegun.api.real_time)
            previous = clock.use(FrozenClock(frozen))
            try:
                for command in example.commands:
                    code, printed = run_command(command, env)
                    check(example, command, code, printed)
            finally:
                clock.use(previous)
            now = datetime.now(scenario.at.tzinfo)


def check(example: Example, command: Command, code: int, printed: list[str]) -> None:
    where = f"{example.where} (scenario {example.options['scenario']}), line {command.line}: `{command.text}`"
    if command.shown is not None and example.info == "console":
        shown, got = normalise(command.shown), normalise(printed)
        if not matches(shown, got):
            diff = "\n".join(difflib.unified_diff(shown, got, f"shown in {example.path}", "printed by etlctl",
                                                  lineterm=""))
            pytest.fail(f"{where} printed something else:\n{diff}", pytrace=False)
    if command.exit_code is UNCHECKED:
        if code in (1, 2):
            pytest.fail(f"{where} exited {code} (an unexpected or a usage error):\n" + "\n".join(printed),
                        pytrace=False)
    elif code != command.exit_code:
        pytest.fail(f"{where} exited {code}, the docs show {command.exit_code}:\n" + "\n".join(printed), pytrace=False)
