"""How `etlctl why` prints an explanation: the job, then its state, what it waits for and what comes next."""

from __future__ import annotations

from etlctl.views import render


def record(explanation) -> dict:
    e = explanation
    return {"job_id": e.job_id, "job": e.label, "code": e.code, "state": e.state,
            "waiting": e.waiting, "next": e.next, "next_at": e.next_at}


def show(explanation, as_json: bool) -> None:
    if as_json:
        render.emit_json(record(explanation))
        return
    lines = [explanation.label]
    for label, items in (("state", explanation.state), ("waiting", explanation.waiting), ("next", explanation.next)):
        for n, item in enumerate(items):
            lines.append(f"  {label if n == 0 else '':<8} {item}")
    render.lines(lines)
