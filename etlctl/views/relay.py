"""How `etlctl relay` (and schedule-next's own publishing) prints what became of each message.

One line per message on stdout, as each batch is recorded (a long pass never
sits in memory): published, skipped (its run was over) or not confirmed (it
stays pending). Quiet when there was nothing to publish. With --json: one
document for a pass, or with --follow one object per message and line.
"""

from __future__ import annotations

import sys

from etlctl.views import render


def describe(handled, dry_run: bool = False) -> str:
    """One message's line."""
    what = f"message {handled.id} (job {handled.job_id} {handled.step} {handled.phase}, run {handled.token})"
    if handled.result == "published":
        return f"published {what} to {handled.queue}"
    if handled.result == "would publish":
        return f"would publish {what} to {handled.queue}"
    if handled.result == "skipped":
        return f"{'would skip' if dry_run else 'skipped'} {what}: {handled.reason}"
    return f"not published: {what} to {handled.queue}: {handled.reason}; still pending (attempt {handled.attempts})"


def record(handled) -> dict:
    return {"id": handled.id, "job_id": handled.job_id, "step": handled.step, "phase": handled.phase,
            "token": handled.token, "queue": handled.queue, "result": handled.result, "reason": handled.reason,
            "attempts": handled.attempts}


class RelayPrinter:
    """Prints each batch as it is recorded; ``finish`` closes a pass (its JSON document)."""

    def __init__(self, as_json: bool = False, dry_run: bool = False, follow: bool = False) -> None:
        self.as_json = as_json
        self.dry_run = dry_run
        self.follow = follow
        self.records: list[dict] = []

    def batch(self, handled) -> None:
        if self.as_json and self.follow:
            for item in handled:
                sys.stdout.write(render.to_json({**record(item), "dry_run": self.dry_run}, indent=None) + "\n")
            sys.stdout.flush()
        elif self.as_json:
            self.records += [record(item) for item in handled]
        elif handled:
            render.lines(describe(item, self.dry_run) for item in handled)

    def finish(self) -> None:
        """The pass's JSON document: every message it handled, by what became of it."""
        if not self.as_json or self.follow:
            return
        by = {"published": [], "would_publish": [], "skipped": [], "not_confirmed": []}
        for item in self.records:
            key = {"published": "published", "would publish": "would_publish", "skipped": "skipped"}.get(
                item["result"], "not_confirmed")
            by[key].append(item)
        render.emit_json({"dry_run": self.dry_run, **by})


def not_confirmed_summary(handled) -> tuple[str, str]:
    """("3 messages", "2 nacked, 1 returned"): for the error a pass ends with when the broker did not confirm all."""
    counts: dict[str, int] = {}
    for item in handled:
        counts[item.result] = counts.get(item.result, 0) + 1
    total = sum(counts.values())
    return (f"{total} message{'s' if total != 1 else ''}",
            ", ".join(f"{n} {result}" for result, n in sorted(counts.items())))


def note(text: str) -> None:
    render.note(text)
