"""etlctl's benchmarks: `make bench` (or `.venv/bin/python bench/run.py`).

Everything runs on the embedded default server, in a home of its own
(bench/.work/home, git-ignored), in databases of its own; nothing touches the
user's data. Every figure is the median of several runs measured side by side
with its baseline (A B A B ...), because only ratios compare on a noisy machine.
Writes BENCHMARKS.md (a --quick run writes bench/.work/BENCHMARKS-quick.md).

Sections: startup, latency, embedded discovery, round trips, scale (10k, 100k,
1M jobs; plans), concurrent writers, memory, the design it replaces, and the
relay (RabbitMQ: throughput, commit-to-queue latency, the check's look at the
queues; it starts a private RabbitMQ node, or uses ETLCTL_TEST_AMQP_URL), and
`etlctl run` against cron (deadline lag, idle cost, memory, end to end).

`--only SECTIONS` measures those alone and merges them into the last full run's
results: the other sections of BENCHMARKS.md stay as they were measured, and
each merged section says when it was measured.
"""

from __future__ import annotations

import argparse
import compileall
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `bench` and `tests` from the repository

from bench.concurrency import bench_writers  # noqa: E402 (after the path above)
from bench.database import DUE, Server  # noqa: E402
from bench.design import bench_design  # noqa: E402
from bench.latency import bench_latency, bench_startup  # noqa: E402
from bench.measure import REPO, WORK, Report  # noqa: E402
from bench.memory import bench_memory  # noqa: E402
from bench.relay import bench_relay  # noqa: E402
from bench.report import NOTES, load, machine, merge, save, write_markdown  # noqa: E402
from bench.round_trips import bench_round_trips  # noqa: E402
from bench.run_service import bench_run  # noqa: E402
from bench.scale import bench_scale  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small sizes and few repetitions, for iterating (writes bench/.work/).")
    parser.add_argument("--reps", type=int, help="Repetitions of each latency measurement [30; quick 10].")
    parser.add_argument("--sizes", help="Comma-separated job counts for the scale test [10000,100000,1000000; quick 10000,50000].")
    parser.add_argument("--only", help="Comma-separated sections: startup,latency,roundtrips,scale,writers,memory,relay,"
                                       "run; "
                                       "merged into the last full run's results.")
    parser.add_argument("--writer-seconds", type=float, help="Seconds per concurrent-writers phase [10; quick 3].")
    parser.add_argument("--out", help="Where to write the report [BENCHMARKS.md; quick: bench/.work/BENCHMARKS-quick.md].")
    parser.add_argument("--keep-server", action="store_true", help="Leave the bench's embedded server running afterwards.")
    parser.add_argument("--render", action="store_true",
                        help="Measure nothing: write the report again from the last run's results (bench/.work/results*.json).")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    quick = args.quick
    reps = args.reps or (10 if quick else 30)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([10_000, 50_000] if quick else [10_000, 100_000, 1_000_000])
    if min(sizes) < 10 * DUE:
        raise SystemExit(f"bench: sizes must be at least {10 * DUE:,} jobs (there are always {DUE:,} due ones, and as many in flight)")
    only = set(args.only.split(",")) if args.only else {"startup", "latency", "roundtrips", "scale", "writers", "memory",
                                                         "relay", "run"}
    writer_seconds = args.writer_seconds or (3.0 if quick else 10.0)
    out = Path(args.out) if args.out else (WORK / "BENCHMARKS-quick.md" if quick else REPO / "BENCHMARKS.md")
    results = WORK / ("results-quick.json" if quick else "results.json")
    merging = bool(args.only) and results.exists()
    if args.only and not merging and not args.out:
        # No full run to merge into: never replace BENCHMARKS.md with a few sections.
        out, results = WORK / "BENCHMARKS-only.md", WORK / "results-only.json"
    if args.render:
        write_markdown(load(results, args), out, NOTES.read_text(encoding="utf-8").splitlines() if NOTES.exists() else [])
        print(f"wrote {out} from {results}")
        return

    WORK.mkdir(parents=True, exist_ok=True)
    # What an installed wheel has: bytecode compiled at install time (PYTHONDONTWRITEBYTECODE may be set here).
    compileall.compile_dir(str(REPO / "etlctl"), quiet=1)
    compileall.compile_dir(str(REPO / "sql"), quiet=1)
    report = Report(args)
    server = Server()
    from etlctl.store import queries

    (WORK / "job_detail.sql").write_text(queries.get("job_detail"))
    try:
        report.machine = machine(server)
        print(f"machine: {report.machine}", flush=True)
        if "startup" in only:
            bench_startup(report, reps)
        if "latency" in only:
            bench_latency(report, server, reps)
        round_trips = bench_round_trips(report, server) if "roundtrips" in only or "scale" in only else None
        scale = bench_scale(report, server, sizes, 3 if quick else 5) if "scale" in only else {}
        if "writers" in only:
            bench_writers(report, server, writer_seconds, 1 if quick else 3, 3.0 if quick else 10.0)
        if "memory" in only:
            bench_memory(report, server, [10_000, 100_000] if not quick else [10_000, 20_000], 2 if quick else 3)
        if "relay" in only:
            bench_relay(report, server, reps, required=bool(args.only))
        if "run" in only:
            bench_run(report, server)
        if round_trips is not None:
            bench_design(report, round_trips, scale)
        notes = NOTES.read_text(encoding="utf-8").splitlines() if NOTES.exists() else []
        if merging:
            report = merge(load(results, argparse.Namespace(**vars(args))), report)
        save(report, results)
        write_markdown(report, out, notes)
        print(f"wrote {out} in {(time.time() - report.started) / 60:.1f} minutes", flush=True)
    finally:
        if not args.keep_server:
            server.stop()


if __name__ == "__main__":
    main()
