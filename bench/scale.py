"""A schedule-next tick and a sweep tick at 10k, 100k and 1M jobs, with the plans of their statements."""

from __future__ import annotations

import statistics
import time

from bench.database import DUE, Server, count_started, count_swept, generate, quiet, restore
from bench.measure import ETLCTL, Figure, Report, Stat, clean_env, ms, run_timed
from bench.round_trips import proxied


def explain_tick(session_dsn: str) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement of a schedule-next tick and a sweep tick,
    run through the real code paths; each statement is explained in a savepoint rolled back, then
    run, and the whole tick is rolled back at the end."""
    import psycopg

    from etlctl.store import settings as config
    from etlctl.store import connection as db
    from etlctl.actions import flow
    from etlctl.core import lifecycle
    from etlctl.store import queries
    from etlctl.actions import schedule as scheduler

    plans: dict[str, str] = {}

    class Explaining:
        def __init__(self, session):
            self.session = session

        def __getattr__(self, name):
            return getattr(self.session, name)

        def _explain(self, query, params):
            if query in plans:
                return
            full = self.session._params(params)
            with self.session.conn.transaction():  # a savepoint: the explained write is undone
                rows = self.session.conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + queries.get(query), full).fetchall()
                raise psycopg.Rollback()
            plans[query] = shorten("\n".join(r["QUERY PLAN"] for r in rows))

        def all(self, query, /, **params):
            self._explain(query, params)
            return self.session.all(query, **params)

        def one(self, query, /, **params):
            self._explain(query, params)
            return self.session.one(query, **params)

    with db.connect(config.ConnectionSettings(dsn=session_dsn), command="bench") as session:
        explaining = Explaining(session)
        with session.transaction(rollback=True):  # each tick on the same data, undone
            scheduler.tick(explaining, exclusive=False)
        with session.transaction(rollback=True):
            flow.sweep(explaining, lifecycle.Timings())
    return plans


def shorten(plan: str) -> str:
    """Long parameter arrays (the claimed integration ids) cut to their first few values."""
    import re

    def cut(match):
        values = match.group(1).split(",")
        return match.group(0) if len(values) <= 8 else "'{" + ",".join(values[:5]) + f",… ({len(values)} values)" + "}'"

    return re.sub(r"'\{([^{}']*)\}'", cut, plan)


def execution_ms(plan: str) -> float | None:
    for line in plan.splitlines():
        if line.strip().startswith("Execution Time:"):
            return float(line.split(":")[1].split()[0])
    return None


def bench_scale(report: Report, server: Server, sizes: list[int], reps: int) -> dict:
    from etlctl.store import settings as config
    from etlctl.store import connection as db
    from etlctl.actions import flow
    from etlctl.core import lifecycle
    from etlctl.actions import schedule as scheduler

    results = {}
    plans_by_size = {}
    for n in sizes:
        print(f"scale: {n:,} jobs", flush=True)
        name = f"bench_scale_{n}"
        dsn, facts = generate(server, name, n)
        quiet(server)
        print(f"  generated in {facts['load_seconds']:.1f} s: {facts}", flush=True)
        env = clean_env(ETLCTL_DSN=dsn)
        times = {"schedule-next": [], "sweep": [], "schedule-next in-process": [], "sweep in-process": []}
        with db.connect(config.ConnectionSettings(dsn=dsn), command="bench") as session:
            for rep in range(reps + 1):  # the first round warms the cache and is not counted
                t = run_timed([ETLCTL, "schedule-next"], env)
                assert count_started(server, name, "RUNNING") == DUE
                restore(server, name)
                t0 = time.perf_counter()
                tick = scheduler.tick(session)
                t_in = time.perf_counter() - t0
                assert len(tick.started) == DUE, len(tick.started)
                restore(server, name)
                s = run_timed([ETLCTL, "sweep"], env)
                assert count_swept(server, name) == DUE
                restore(server, name)
                t0 = time.perf_counter()
                acted = flow.sweep_tick(session, lifecycle.Timings()).acted
                s_in = time.perf_counter() - t0
                assert acted == DUE, acted
                restore(server, name)
                if rep > 0:
                    times["schedule-next"].append(t)
                    times["schedule-next in-process"].append(t_in)
                    times["sweep"].append(s)
                    times["sweep in-process"].append(s_in)
        from tests.pgproxy import PgProxy

        with PgProxy(server.running.socket_dir, server.running.port) as proxy:
            counts = {"schedule-next": proxied(proxy, name, ["schedule-next"])}
            restore(server, name)
            counts["sweep"] = proxied(proxy, name, ["sweep"])
            restore(server, name)
        plans = explain_tick(dsn)
        plans_by_size[n] = plans
        results[n] = {"facts": facts, "times": times, "counts": counts,
                      "plan_ms": {q: execution_ms(p) for q, p in plans.items()}}
        print(f"  {({k: round(statistics.median(v) * 1000, 1) for k, v in times.items()})} ms; "
              f"statements {[len(c['statements']) for c in counts.values()]}; "
              f"plans {({q: v for q, v in results[n]['plan_ms'].items()})}", flush=True)
        server.drop(name)

    small, large = min(sizes), max(sizes)
    lines = ["| jobs | tenants | integrations | table size | load | due (schedule) | FINISHED | due (sweep) | RUNNING |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n in sizes:
        f = results[n]["facts"]
        lines.append(f"| {n:,} | {f['tenants']:,} | {f['integrations']:,} | {f['size']} | {f['load_seconds']:.1f} s | {f['due']:,} | "
                     f"{f['finished']:,} | {f['sweep_due']:,} | {f['running']:,} |")
    lines += ["", "| tick | " + " | ".join(f"{n:,} jobs" for n in sizes) + f" | ratio {large:,} / {small:,} |",
              "| --- | " + " | ".join("---" for _ in sizes) + " | --- |"]
    for what in ("schedule-next", "schedule-next in-process", "sweep", "sweep in-process"):
        cells = [f"{statistics.median(results[n]['times'][what]) * 1000:.1f} ms ({Stat(results[n]['times'][what]).spread()})" for n in sizes]
        ratio = statistics.median(results[large]["times"][what]) / statistics.median(results[small]["times"][what])
        lines.append(f"| `{what}` | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    for what in ("schedule-next", "sweep"):
        lines.append(f"| statements per `{what}` tick (proxy) | " + " | ".join(
            str(len(results[n]["counts"][what]["statements"])) for n in sizes) + " | |")
    queries_seen = sorted({q for n in sizes for q in results[n]["plan_ms"]})
    for q in queries_seen:
        lines.append(f"| `{q}` execution (EXPLAIN ANALYZE) | " + " | ".join(
            f"{results[n]['plan_ms'].get(q) or 0:.2f} ms" for n in sizes) + " | |")
    report.text("scale", *lines)
    for what in ("schedule-next", "sweep"):
        counts = [len(results[n]["counts"][what]["statements"]) for n in sizes]
        report.add(Figure("round trips", f"statements per `{what}` tick with {DUE:,} due, at " + ", ".join(f"{n:,}" for n in sizes) + " jobs",
                          " / ".join(map(str, counts)), "deterministic (counted on the wire)", "-", None,
                          "constant", len(set(counts)) == 1))
    for what, label in (("schedule-next", "`etlctl schedule-next` tick"), ("schedule-next in-process", "schedule-next tick, in-process"),
                        ("sweep", "`etlctl sweep` tick"), ("sweep in-process", "sweep tick, in-process")):
        a, b = Stat(results[large]["times"][what]), Stat(results[small]["times"][what])
        ratio = a.median / b.median
        report.add(Figure("scale", f"{label}, {large:,} jobs ({DUE:,} due)", ms(a), a.spread(),
                          f"the same at {small:,} jobs: {ms(b)} ({b.spread()})", ratio, "≤ 1.5x", ratio <= 1.5))
    report.text("plans", f"Plans of every statement of one schedule-next tick and one sweep tick at {large:,} jobs "
                         f"({DUE:,} due for each), from `EXPLAIN (ANALYZE, BUFFERS)` run through etlctl's own code path "
                         "(each statement explained in a savepoint that is rolled back, then run; the tick rolled back at the end).", "")
    for q, plan in plans_by_size[large].items():
        report.text("plans", f"<details><summary><code>{q}</code> at {large:,} jobs: {execution_ms(plan)} ms</summary>", "",
                    "```", plan, "```", "", "</details>", "")
    return results
