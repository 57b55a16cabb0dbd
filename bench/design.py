"""The design etlctl replaces (a timer per job and 2 s polling) against ticks from cron, in queries per hour."""

from __future__ import annotations

from bench.measure import Report


def bench_design(report: Report, round_trips: dict, scale: dict) -> None:
    sizes = sorted(scale)
    # The counts of a tick with 1,000 due jobs at the largest size when the scale test ran, else the small database's.
    big = scale[sizes[-1]]["counts"] if sizes else None
    counted = big or {"schedule-next": round_trips["schedule-next (tick)"], "sweep": round_trips["sweep (tick)"]}
    sched, sweep = counted["schedule-next"]["statements"], counted["sweep"]["statements"]
    sched_ctl, sweep_ctl = counted["schedule-next"]["control"], counted["sweep"]["control"]
    jobs = 10_000
    lines = [
        f"The design etlctl replaces keeps one in-process timer per job and polls every RUNNING job every 2 s. "
        f"etlctl runs `schedule-next` and `sweep` from cron every minute. Queries per hour for {jobs:,} jobs:",
        "",
        "| design | per job | queries per hour, 10,000 jobs |",
        "| --- | --- | --- |",
    ]
    poll = 3600 // 2
    for share, label in ((1.0, "all 10,000 running"), (0.1, "1,000 running (10%)"), (0.01, "100 running (1%)")):
        lines.append(f"| timers + 2 s polling, {label} | {poll:,} polls/hour per running job | {int(jobs * share * poll):,} |")
    per_min_statements = len(sched) + len(sweep)
    per_min_trips = per_min_statements + len(sched_ctl) + len(sweep_ctl)
    lines.append(f"| etlctl on cron, every minute | none: one tick per database | {per_min_statements * 60:,} statements "
                 f"({per_min_trips * 60:,} round trips with BEGIN/SAVEPOINT/COMMIT) |")
    lines += [
        "",
        "Arithmetic and assumptions:",
        f"- Old design: a poll is one query; 3600 s / 2 s = {poll:,} queries per hour per running job, so "
        f"{jobs:,} × {poll:,} = {jobs * poll:,} per hour if every job is running, and proportionally fewer when fewer run. "
        "The timers themselves cost no query while they wait; when one fires it adds the checkJobCompletion and "
        "resetJobStatus calls (a handful of queries per run, not counted above), and every API process keeps one "
        "timer per job in memory, lost on a restart.",
        f"- etlctl: one `schedule-next` tick = {len(sched)} statements ({', '.join(sched)}) plus "
        f"{len(sched_ctl)} transaction-control messages ({', '.join(sched_ctl)}); one `sweep` tick = "
        f"{len(sweep)} statements ({', '.join(sweep)}). Counted on the wire by tests/pgproxy.py. "
        f"So {len(sched)} + {len(sweep)} = {per_min_statements} statements a minute, {per_min_statements * 60:,} an hour, "
        f"whether the database holds 10 jobs or 1,000,000 (see Scale: the same counts at every size"
        + (f", {len(big['schedule-next']['statements'])} and {len(big['sweep']['statements'])} at {sizes[-1]:,} jobs" if big else "")
        + ").",
        "- The sweep reads and writes in batches of 1,000 jobs (--batch): a minute with more than 1,000 FINISHED jobs "
        "whose reset step is due adds 2 statements per further 1,000; a sweep whose batch comes back full reads once more "
        "(one statement) to see that nothing is left.",
        "- Workers' own status updates (`etlctl step` or the workers' SQL) are the same in both designs and are not counted.",
        f"- Ratio: with all 10,000 jobs running the old design sends {jobs * poll / (per_min_statements * 60):,.0f}x the statements; "
        f"with 1% running, {jobs * 0.01 * poll / (per_min_statements * 60):,.0f}x.",
    ]
    report.text("design", *lines)
