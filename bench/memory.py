"""Peak resident memory of a sweep over every job, against `etlctl --version` and psycopg alone."""

from __future__ import annotations

import statistics
import subprocess
import time

from bench.database import Server, count_swept, generate, quiet, restore
from bench.measure import ETLCTL, PYTHON, REPO, WORK, Figure, Report, clean_env


def peak_rss(argv, env) -> int:
    """Peak resident memory (KiB) of one command, measured by a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
               "if p.returncode: sys.exit(p.stderr.decode()[-2000:])\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    proc = subprocess.run([PYTHON, "-c", wrapper, *map(str, argv)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {argv} failed: {proc.stderr}")
    return int(proc.stdout.strip())


def bench_memory(report: Report, server: Server, sizes: list[int], reps: int) -> None:
    print("memory", flush=True)
    quiet(server)
    env = clean_env()
    rss: dict[str, list[float]] = {"version": [], "import psycopg": [], "floor": []}
    sweeps: dict[tuple[int, int], list[float]] = {}
    seconds: dict[tuple[int, int], list[float]] = {}
    query_file = WORK / "job_detail.sql"
    batches = (1000, 100)
    for n in sizes:
        name = f"bench_memory_{n}"
        dsn, facts = generate(server, name, n, all_sweep=True)
        print(f"  {n:,} FINISHED jobs due, generated in {facts['load_seconds']:.1f} s", flush=True)
        for _ in range(reps):
            rss["version"].append(peak_rss([ETLCTL, "--version"], env))
            rss["import psycopg"].append(peak_rss([PYTHON, "-c", "import psycopg"], env))
            rss["floor"].append(peak_rss([PYTHON, str(REPO / "bench" / "floor.py"), dsn, str(query_file), "1"], env))
            for batch in batches:
                t0 = time.perf_counter()
                sweeps.setdefault((n, batch), []).append(peak_rss([ETLCTL, "sweep", "--batch", str(batch)], clean_env(ETLCTL_DSN=dsn)))
                seconds.setdefault((n, batch), []).append(time.perf_counter() - t0)
                acted = count_swept(server, name)
                assert acted == n, (acted, n)  # every job was acted on
                restore(server, name)
        for batch in batches:
            print(f"  sweep --batch {batch} over {n:,}: {statistics.median(sweeps[(n, batch)]) / 1024:.1f} MiB "
                  f"in {statistics.median(seconds[(n, batch)]):.1f} s", flush=True)
        server.drop(name)

    def mib(values):
        return f"{statistics.median(values) / 1024:.1f} MiB"

    def spread(values):
        return f"min {min(values) / 1024:.1f}, max {max(values) / 1024:.1f} MiB"

    large, small = max(sizes), min(sizes)
    sweep = sweeps[(large, 1000)]
    version, psy, floor = rss["version"], rss["import psycopg"], rss["floor"]
    ratio = statistics.median(sweep) / statistics.median(version)
    report.add(Figure("memory", f"peak RSS of `etlctl sweep` over {large:,} FINISHED jobs, all due ({large:,} writes)", mib(sweep),
                      f"{spread(sweep)}; {statistics.median(seconds[(large, 1000)]):.1f} s", f"`etlctl --version` {mib(version)}",
                      ratio, "≤ 1.5x", ratio <= 1.5,
                      note=f"`python -c \"import psycopg\"` alone takes {mib(psy)}, "
                           f"{statistics.median(psy) / statistics.median(version):.2f}x of `etlctl --version`: "
                           "no command that talks to the database can meet this target while it uses psycopg"))
    report.add(Figure("memory", "the same against `python -c \"import psycopg\"`", mib(sweep), "", mib(psy),
                      statistics.median(sweep) / statistics.median(psy),
                      note="the least any process that talks to PostgreSQL through psycopg needs"))
    report.add(Figure("memory", "the same against the latency floor script (import psycopg, connect, one query)", mib(sweep), "",
                      mib(floor), statistics.median(sweep) / statistics.median(floor)))
    small_batch = sweeps[(large, 100)]
    report.add(Figure("memory", f"peak RSS of `etlctl sweep --batch 100` over {large:,} FINISHED jobs", mib(small_batch),
                      f"{spread(small_batch)}; {statistics.median(seconds[(large, 100)]):.1f} s", f"`etlctl --version` {mib(version)}",
                      statistics.median(small_batch) / statistics.median(version), "≤ 1.5x",
                      statistics.median(small_batch) / statistics.median(version) <= 1.5,
                      note="the working set of one batch is what --batch trades against round trips"))
    if small != large:
        flat = statistics.median(sweep) / statistics.median(sweeps[(small, 1000)])
        report.add(Figure("memory", f"peak RSS of `etlctl sweep` over {large:,} against {small:,} FINISHED jobs", mib(sweep), "",
                          f"{mib(sweeps[(small, 1000)])} over {small:,}", flat, "flat: batches", flat <= 1.1))
    lines = ["| FINISHED jobs, all due | `--batch` | peak RSS | spread | time |", "| --- | --- | --- | --- | --- |"]
    for (n, batch), values in sorted(sweeps.items()):
        lines.append(f"| {n:,} | {batch:,} | {mib(values)} | {spread(values)} | {statistics.median(seconds[(n, batch)]):.1f} s |")
    lines += ["", f"Baselines: `etlctl --version` {mib(version)} ({spread(version)}), `python -c \"import psycopg\"` {mib(psy)} "
              f"({spread(psy)}), the floor script {mib(floor)} ({spread(floor)})."]
    report.text("memory", *lines)
