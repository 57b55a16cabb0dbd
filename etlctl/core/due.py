"""Why a job does not start: the scheduler's rules in plain words.

Pure: given one row of `schedule_plan` (the facts) and the time, say what
keeps the job from starting, or None when it is due. The SQL due rule (the
`_due_at` expression of sql/queries/schedule.sql) decides; this module only
explains its verdict, and a test checks that both agree on every job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from etlctl.core.humanize import clock_time, duration, relative
from etlctl.core.rules import normal_overall, show

STARTABLE = ("READY", "FAILED", "RATE_LIMIT_REACHED")


@dataclass(frozen=True)
class Blocker:
    """What keeps a job from starting: a code for programs, the sentence for people."""

    code: str  # one of BLOCKER_CODES
    text: str


# running, finished: in flight; state: an overall value the scheduler never starts;
# inactive: the job, its integration or its tenant; next_run: not due yet; retry:
# FAILED, waiting for its retry interval; busy: another job of its integration is
# in flight; no_message: its kind defines no first message (job_kinds.message_provider),
# or it has no kind, so no worker would take a run; no_steps: nothing to queue.
BLOCKER_CODES = ("running", "finished", "state", "inactive", "no_message", "no_steps", "next_run", "retry", "busy")


def why_not(row: Mapping, now: datetime) -> str | None:
    """The first thing that keeps this job from starting now, or None if it is due."""
    found = blocker(row, now)
    return None if found is None else found.text


def blocker(row: Mapping, now: datetime) -> Blocker | None:
    """Like :func:`why_not`, with the kind of reason as a code."""
    overall = normal_overall(row["overall"])
    if overall == "RUNNING":
        since = row.get("last_run_started_at")
        return Blocker("running", "RUNNING" + (f" for {duration((now - since).total_seconds())}" if since else "") + " (in flight)")
    if overall == "FINISHED":
        return Blocker("finished", "FINISHED, waiting for its reset (in flight)")
    if overall not in STARTABLE:
        shown = "missing" if overall is None else show(overall)
        return Blocker("state", f"overall {shown} is not a state the scheduler starts")

    inactive = []
    if row["active"] is not True:
        inactive.append("job")
    if row["integration_id"] is not None and row["integration_active"] is not True:
        inactive.append(f"integration {row['integration_id']}")
    if row["tenant_active"] is not True:
        inactive.append(f"tenant {row.get('tenant_name') or row['tenant_id']}")
    if inactive:
        return Blocker("inactive", " and ".join(inactive) + (" inactive" if len(inactive) == 1 else " are inactive"))

    # Never queue a message no worker accepts: a job whose kind defines none is never started.
    if row.get("message_provider") is None:
        if row.get("kind"):
            return Blocker("no_message", f"kind {row['kind']} defines no message (no worker takes its runs): "
                                         "never started")
        return Blocker("no_message", "no job kind matches its name or its provider: no message to queue, never started")
    if row.get("first_step") is None:
        return Blocker("no_steps", f"kind {row['kind']} has no steps to queue")

    due_at = row["due_at"]
    if due_at is not None and due_at > now:
        if overall == "FAILED":
            return Blocker("retry", f"FAILED, retry at {clock_time(due_at)} ({relative(due_at, now)})")
        return Blocker("next_run", f"next_run {relative(due_at, now)} ({clock_time(due_at)})")

    if row.get("busy_job_id") is not None:
        since = row.get("busy_since")
        held = f" for {duration((now - since).total_seconds())}" if since else ""
        return Blocker("busy", f"integration {row['integration_id']} busy with job {row['busy_job_id']} ({row['busy_overall']}{held})")
    return None
