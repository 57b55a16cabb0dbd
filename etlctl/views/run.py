"""How `etlctl run` logs: one line per action, for journald or a log file.

Actions (a reset-flow step applied, a job started, a next step queued, a
message published, skipped or refused) go to stdout, one line each, as
`sweep`, `schedule-next` and `relay` word them; notes (started, an outage and
its end, a SIGHUP) go to stderr. Nothing when nothing happens, except with -v a
heartbeat line every minute. Text lines carry this host's time in front (the
CLI turns --log-timestamps on); with --json each line is one JSON object
with its own "at" (milliseconds), notes too (the final error line stays text).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime

from etlctl.core import humanize
from etlctl.views import render
from etlctl.views import relay as relay_views
from etlctl.views.flow import step_record
from etlctl.views.schedule import started_record, tick_lines

HEARTBEAT_EVERY = 60.0  # seconds between two heartbeat lines (-v)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def seconds_text(seconds: float) -> str:
    """A wait as it is logged: '250ms', '4.5s', '30s', '2m'."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    return humanize.duration(seconds)


def config_text(config) -> str:
    """What a run works with, in one line: its waits, the reset flow's timings, the broker, the health file."""
    timings = config.timings
    parts = [f"waits at most {seconds_text(config.max_sleep)}",
             f"reset flow: delay {seconds_text(timings.delay)}, backoff "
             f"{','.join(seconds_text(s) for s in timings.backoff)}, cool-down {seconds_text(timings.cooldown)}",
             f"broker {config.broker.shown}" if config.broker is not None else "no broker (messages wait in the outbox)"]
    if config.health_file is not None:
        parts.append(f"health file {config.health_file}")
    return "; ".join(parts)


class RunPrinter:
    """etlctl.actions.run.RunLog, printing."""

    def __init__(self, as_json: bool = False, verbose: bool = False, host: str = "", pid: int = 0) -> None:
        self.as_json = as_json
        self.verbose = verbose
        self.host, self.pid = host, pid
        self.last_heartbeat = time.monotonic()
        self.actions = 0  # since the last heartbeat line

    # --- actions (stdout) --------------------------------------------------------------

    def _action(self, text: str, record: dict) -> None:
        self.actions += 1
        if self.as_json:
            sys.stdout.write(render.to_json({"at": _now(), **record}, indent=None) + "\n")
            sys.stdout.flush()
        else:
            render.line(text)

    def swept(self, steps) -> None:
        for step in steps:
            record = step_record(step, as_json=True)
            if record is None or not record["applied"]:
                continue  # skipped (doctor reports those) or done by another process (which logs it)
            self._action(f"{step.job.label()}: {record['action']}: {record['detail']}", {"event": "reset_flow", **record})

    def ticked(self, tick) -> None:
        starts = tick_lines(tick, skipped=False)
        for row, text in zip(tick.started, starts):
            self._action(text, {"event": "start", **started_record(row)})
        for row, text in zip(tick.chained, starts[len(tick.started):]):
            self._action(text, {"event": "queue_next_step", **row})
        if self.verbose:  # another scheduler started a job on the integration first: its log says so
            for row in tick.skipped:
                self.note(f"etlctl: skipped integration {row['integration_id']}: {row['reason']}")

    def relayed(self, handled) -> None:
        for item in handled:
            self._action(relay_views.describe(item), {"event": "relay", **relay_views.record(item)})

    # --- notes (stderr) ----------------------------------------------------------------

    def note(self, text: str) -> None:
        if self.as_json:
            sys.stderr.write(render.to_json({"at": _now(), "note": text}, indent=None) + "\n")
            sys.stderr.flush()
        else:
            render.note(text)

    def started(self, config) -> None:
        self.note(f"etlctl: run started on {self.host} (pid {self.pid}): {config_text(config)}")

    def reloaded(self, config) -> None:
        self.note(f"etlctl: SIGHUP: configuration read again, reconnecting: {config_text(config)}")

    def passed(self, row: dict, wait: float) -> None:
        """After each pass: with -v, a heartbeat line at most every minute."""
        if not self.verbose or time.monotonic() - self.last_heartbeat < HEARTBEAT_EVERY:
            return
        self.last_heartbeat = time.monotonic()
        upcoming = (f"next: {row['next_what']} at {humanize.clock_time(row['next_at'])}" if row["next_at"] is not None
                    else "nothing scheduled")
        self.note(f"etlctl: run alive: {row['passes']} passes, {self.actions} actions in the last "
                  f"{humanize.duration(HEARTBEAT_EVERY)}; {upcoming}; waking in {seconds_text(wait)}")
        self.actions = 0
