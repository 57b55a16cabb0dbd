"""How `etlctl watch` prints a change: a table row, or one JSON object per line."""

from __future__ import annotations

import sys

from etlctl.core import humanize, rules
from etlctl.views import render


def describe(change) -> str:
    """'RUNNING → FINISHED', 'jira_dev_status.embedding running → finished', ..."""
    before, after = change.before, change.after
    suffix = " (while disconnected)" if change.resync else ""
    if after is None:
        return "deleted" + suffix
    if before is None:
        if change.transition is not None and change.transition[1] == after.overall:
            return f"{change.transition[0]} → {change.transition[1]}" + suffix
        return "current state" + suffix
    parts = []
    if before.overall != after.overall:
        parts.append(f"{_state(before.overall)} → {_state(after.overall)}")
    phases = phase_changes(before.steps, after.steps)
    if phases and (not parts or len(phases) <= 2):
        parts.extend(phases[:3] + ([f"and {len(phases) - 3} more"] if len(phases) > 3 else []))
    elif phases:
        parts.append(f"{len(phases)} phases changed")
    return "; ".join(parts or ["changed"]) + suffix


def phase_changes(before: object, after: object) -> list[str]:
    b = before if isinstance(before, dict) else {}
    a = after if isinstance(after, dict) else {}
    out = []
    for step in list(a) + [s for s in b if s not in a]:
        old, new = b.get(step), a.get(step)
        if old == new:
            continue
        if isinstance(old, (dict, type(None))) and isinstance(new, (dict, type(None))):
            old, new = old or {}, new or {}
            for phase in list(new) + [p for p in old if p not in new]:
                if old.get(phase) != new.get(phase):
                    out.append(f"{step}.{phase} {_value(old.get(phase))} → {_value(new.get(phase))}")
        else:
            out.append(f"{step} {render.to_json(old, indent=None)} → {render.to_json(new, indent=None)}")
    return out


def _state(overall: object) -> str:
    return overall if isinstance(overall, str) else rules.show(overall)


def _value(phase: object) -> str:
    """A phase's value in a change: as written when it is text, else its JSON; 'unset' when absent."""
    if phase is None:
        return "unset"
    return phase if isinstance(phase, str) else render.to_json(phase, indent=None)


class Printer:
    """Table rows on stdout, or one JSON object per line; flushed at once."""

    def __init__(self, as_json: bool, stream=None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.header_done = False

    def change(self, change) -> None:
        if self.as_json:
            after = change.after
            record = {"job_id": change.job_id, "overall": after.overall if after else None,
                      "steps": after.steps if after else None, "resync": change.resync}
            if after is None:
                record["deleted"] = True
            self.stream.write(render.to_json(record, indent=None) + "\n")
        else:
            if not self.header_done:
                self.stream.write(f"{'TIME':<8}  {'JOB':>6}  {'NAME':<16}  {'TENANT':<12}  {'OVERALL':<18}  CHANGE\n")
                self.header_done = True
            who = change.after or change.before
            overall = _state(change.after.overall) if change.after else "-"
            row = (f"{humanize.clock_time(change.at):<8}  {who.job_id:>6}  {_fit(who.name, 16)}  "
                   f"{_fit(who.tenant, 12)}  {overall:<18}  {describe(change)}")
            self.stream.write(render.visible(row) + "\n")
        self.stream.flush()


def _fit(text: str, width: int) -> str:
    return (render.truncate(text, width) or "").ljust(width)
