"""How the reset-flow commands print: complete, step, check, wait-and-reset,
reset and sweep (its rows stream, batch by batch), and the countdown.

Each ``show_*`` takes what the command's one action returned, and whether
it was a --dry-run (which only changes the verbs: "would reset").
"""

from __future__ import annotations

import sys
from datetime import datetime

from etlctl.core import humanize
from etlctl.core import lifecycle, rules
from etlctl.views import output, render
from etlctl.views.status import emit_step_grid, step_rows


def _run(token: object) -> str:
    return f"run {token or 'without a token'}"


def show_complete(result: dict, as_json: bool, dry_run: bool) -> None:
    if as_json:
        render.emit_json({**result, "dry_run": dry_run})
    elif result["result"] == "already":
        render.line(f"job {result['job_id']} is already FINISHED ({_run(result['token'])}): nothing to do")
    else:
        now = result["now"]
        deadline = datetime.fromisoformat(result["status"]["reset_deadline"]).astimezone(now.tzinfo)
        prefix = "would mark" if dry_run else "marked"
        render.line(f"{prefix} job {result['job_id']} FINISHED ({_run(result['token'])}); first reset check at "
                    f"{humanize.clock_time(deadline)} ({humanize.relative(deadline, now)})")


def show_step(result: dict, as_json: bool, dry_run: bool) -> None:
    job_id, phase = result["job_id"], f"{result['step']}.{result['phase']}"
    if as_json:
        render.emit_json({**result, "dry_run": dry_run})
    elif result["result"] == "already":
        render.line(f"job {job_id}: {phase} is already {result['status']}")
    else:
        verb = "would set" if dry_run else "set"
        render.line(f"job {job_id}: {verb} {phase} {result['previous'] or 'unset'} -> {result['status']}")


def check_retry_note(attempt: int, checks: int, completion, wait: float) -> None:
    """`check --retry` between two checks (stderr)."""
    render.note(f"check {attempt} of {checks}: not finished ({'; '.join(completion.reasons)}); "
                f"next check in {humanize.duration(wait)}")


def show_check(result, as_json: bool) -> None:
    """The verdict: the step grid (or the flow document's JSON). Not finished is the caller's error line."""
    job, completion = result.job, result.completion
    if as_json:
        render.emit_json({
            "job_id": job.id, "all_finished": completion.all_finished, "steps_status": completion.steps_status,
            "overall": completion.overall, "reasons": list(completion.reasons), "checks": result.attempts,
        })
        return
    emit_step_grid(step_rows(job))
    if completion.all_finished:
        render.line(f"{job.label()}: all steps finished")


def show_reset(result, as_json: bool, dry_run: bool) -> None:
    if result.overridden:
        render.note(f"etlctl: warning: forced reset of {result.job.label()} overrode: {'; '.join(result.overridden)}")
    if result.dropped:
        kept = "kept every other key" if any(part.path for part in result.dropped) else "started it over"
        render.note(f"etlctl: warning: {'would drop' if dry_run else 'dropped'} what etlctl cannot read from "
                    f"{result.job.label()}'s status document ({kept}): "
                    + "; ".join(f"{part.where} ({part.reason})" for part in result.dropped))
    _reset_done(result.job, result.row, as_json, overridden=result.overridden, dry_run=dry_run,
                dropped=result.dropped)


def show_wait_and_reset(outcome, as_json: bool) -> None:
    """The reset it made (or why none was needed); for a dry run, the one next step."""
    if outcome.next_step is not None:
        _next_step(outcome.job, outcome.next_step, as_json)
    else:
        _reset_done(outcome.job, outcome.reset_row, as_json, by_other=outcome.by_other)


def _next_step(job, decision, as_json: bool) -> None:
    if as_json:
        render.emit_json({"job_id": job.id, "action": decision.action, "reason": decision.reason,
                          "deadline": decision.deadline, "attempt": decision.attempt, "dry_run": True})
        return
    deadline = decision.deadline
    when = f" at {humanize.when(deadline)} ({humanize.relative(deadline, job.now)})" if deadline else ""
    render.line(f"{job.label()}: next: {decision.action}{when}: {decision.reason}")


def _reset_done(job, row, as_json, *, by_other=False, overridden=(), dry_run=False, dropped=()) -> None:
    status = row["status"] if row else job.status
    steps = status.get("steps") if isinstance(status, dict) else None
    if as_json:
        render.emit_json({
            "success": row is not None or by_other or job.overall == "READY",
            "job_id": job.id,
            "overall": status.get("overall") if isinstance(status, dict) else None,
            "steps": steps,
            "next_run": row["next_run"] if row else job.next_run,
            "reset_by_other": by_other,
            "forced": bool(overridden),
            "overridden": list(overridden),
            "dropped": [{"path": list(part.path), "reason": part.reason} for part in dropped],
            "dry_run": dry_run,
        })
        return
    if row is None and by_other:
        render.line(f"{job.label()} was reset or restarted by someone else: it is {rules.state_text(job.overall)} now")
    elif row is None:
        render.line(f"{job.label()} is already READY: nothing to do")
    else:
        verb = "would reset" if dry_run else "reset"
        render.line(f"{verb} {job.label()} to READY; next run at {humanize.when(row['next_run'])} "
                    f"({humanize.relative(row['next_run'], row['now'])})")


class WaitPrinter:
    """wait-and-reset's progress on stderr while it works: a line at each state change; and
    on a terminal, the wait itself, redrawn each second ("next check in 2m40s (attempt 2 of 5)",
    "Job completed. Resetting in 30 seconds...")."""

    def __init__(self, checks: int = lifecycle.Timings().checks, stream=None) -> None:
        self.checks = checks  # how many checks the flow makes: "attempt 2 of 5"
        self.stream = stream  # None: stderr as it is when a wait starts
        self.last = None

    def decided(self, job, decision) -> None:
        key = (decision.action, decision.stage, decision.attempt, decision.deadline)
        if key == self.last:
            return
        self.last = key
        when = f"{humanize.clock_time(decision.deadline)} ({humanize.relative(decision.deadline, job.now)})" if decision.deadline else ""
        if decision.action == lifecycle.SCHEDULE:
            render.note(f"{job.label()}: first check at {when}")
        elif decision.action == lifecycle.RETRY:
            render.note(f"{job.label()}: {decision.reason}; next check at {when}")
        elif decision.action == lifecycle.WAIT and decision.stage != lifecycle.COOLDOWN:
            render.note(f"{job.label()}: waiting for {decision.reason} at {when}")
        elif decision.action == lifecycle.START_COOLDOWN:
            render.note(f"{job.label()}: {decision.reason}")

    def reconnecting(self, job_id: int, reason: str) -> None:
        render.note(f"etlctl: lost the database ({reason}); reconnecting with backoff")

    def reconnected(self, job_id: int, where: str, seconds: float) -> None:
        render.note(f"etlctl: reconnected to the database at {where} after {humanize.duration(seconds)}; "
                    f"job {job_id} carries on from its durable state")

    def waiting(self, job, decision, seconds: float, sleep) -> None:
        if decision.stage == lifecycle.COOLDOWN:
            Countdown(sleep, self.stream).run(seconds)
        else:
            # Elsewhere than on a terminal, the line decided() wrote says when the check comes.
            attempt = f"(attempt {decision.attempt + 1} of {self.checks})"
            Countdown(sleep, self.stream, lambda left: f"next check in {humanize.duration(left)} {attempt}",
                      every=None).run(seconds)


class SweepPrinter:
    """Streams what a sweep did, batch by batch, so a large backlog never sits in memory.

    Quiet when nothing was done. Table rows on stdout, or one JSON array.
    Jobs it could not judge (malformed reset state) are listed only in JSON
    and with -v: `etlctl doctor` reports them, and cron mail should not repeat
    them every minute.
    """

    HEADER = f"{'JOB':>7}  {'NAME':<24} {'ACTION':<9} DETAIL"

    def __init__(self, as_json: bool, dry_run: bool = False, verbose: bool = False) -> None:
        self.as_json = as_json
        self.dry_run = dry_run
        self.verbose = verbose
        self.count = 0

    def batch(self, steps) -> None:
        for step in steps:
            record = self._record(step)
            if record is None:
                continue
            if self.as_json:
                prefix = "[\n" if self.count == 0 else ",\n"
                sys.stdout.write(prefix + render.to_json(record, indent=None))
            else:
                if self.count == 0:
                    render.lines([self.HEADER])
                render.lines([f"{record['job_id']:>7}  {render.truncate(record['job_name'], 24):<24} "
                              f"{record['action']:<9} {record['detail']}"])
            self.count += 1
        sys.stdout.flush()

    def finish(self, swept) -> None:
        """After the sweep: close the JSON array; or, when another sweep held the lock, say so."""
        if not swept.locked:
            if self.as_json:
                render.emit_json([])
            elif self.verbose:
                render.note("etlctl: another sweep is running on this database; nothing to do")
        elif self.as_json:
            sys.stdout.write("[]\n" if self.count == 0 else "\n]\n")
            sys.stdout.flush()

    def _record(self, step) -> dict | None:
        return step_record(step, as_json=self.as_json, verbose=self.verbose, dry_run=self.dry_run)


def step_record(step, *, as_json: bool = False, verbose: bool = False, dry_run: bool = False) -> dict | None:
    """One job's turn in a sweep as sweep and run show it; None when it is not shown (a skip, without
    --json or -v; a race lost to another process, which reports it, without --json)."""
    job, decision, row = step.job, step.decision, step.applied
    if decision.action == lifecycle.SKIP and decision.state.problem:
        # Listed on every sweep, -v or not, until someone fixes it: this job waits for a human.
        action, detail = "malformed", decision.reason
    elif decision.action == lifecycle.SKIP:
        if not (as_json or verbose):
            return None
        action, detail = "skip", decision.reason
    elif row is None:
        if not as_json:
            return None  # another process acted first; it will report it
        action, detail = "lost-race", "another process changed the job first"
    else:
        action = decision.action
        now = row["now"]
        if action == lifecycle.RESET:
            detail = f"READY; next run at {humanize.when(row['next_run'])} ({humanize.relative(row['next_run'], now)})"
        elif action == lifecycle.GIVE_UP:
            detail = decision.reason
        elif action == lifecycle.SCHEDULE:
            detail = f"first check at {humanize.clock_time(decision.deadline)} ({humanize.relative(decision.deadline, now)})"
        elif action == lifecycle.START_COOLDOWN:
            detail = f"{decision.reason}; reset at {humanize.clock_time(decision.deadline)} ({humanize.relative(decision.deadline, now)})"
        else:
            detail = f"{decision.reason}; next check at {humanize.clock_time(decision.deadline)} ({humanize.relative(decision.deadline, now)})"
        if dry_run:
            action = f"{action}?"
    return {"job_id": job.id, "job_name": job.job_name, "tenant_id": job.tenant_id, "action": action,
            "applied": row is not None and not dry_run, "detail": detail, "deadline": decision.deadline}


class Countdown:
    """A wait shown as it passes, "Job completed. Resetting in 30 seconds..." by default.

    Live (redrawn each second, then erased) on a terminal; otherwise one plain
    line every ``every`` seconds, which reads well in a log file, or none at all
    (``every=None``). Time passes only through ``sleep``: the clock seam's, so
    tests move frozen time instead of waiting.
    """

    def __init__(self, sleep, stream=None, text=None, every: float | None = 10.0) -> None:
        self.sleep = sleep
        self.stream = stream or sys.stderr
        self.text = text or _resetting_in
        self.every = every
        self.live = output.live(self.stream)

    def run(self, seconds: float) -> None:
        remaining = max(0.0, seconds)
        if not self.live and self.every is None:
            self.sleep(remaining)
            return
        step = 1.0 if self.live else self.every
        while remaining > 0:
            self._show(remaining)
            pause = min(step, remaining) if self.live else (remaining % step or step)
            self.sleep(pause)
            remaining -= pause
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.flush()

    def _show(self, remaining: float) -> None:
        text = self.text(int(-(-remaining // 1)))  # ceil: never "0 seconds" while waiting
        if self.live:
            self.stream.write(f"\r\033[K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _resetting_in(seconds: int) -> str:
    return f"Job completed. Resetting in {seconds} second{'s' if seconds != 1 else ''}..."
