"""How jobs look on screen and in JSON: `status` (every job, or one job with
its step grid, which `check` shows too) and `kinds`."""

from __future__ import annotations

from etlctl.core import lifecycle
from etlctl.core import humanize
from etlctl.views import render
from etlctl.core import rules
from etlctl.core.job import Job


def active_text(job_active, integration_active, tenant_active, has_integration: bool = True) -> str:
    off = [name for name, flag in (("job", job_active), ("integration", integration_active), ("tenant", tenant_active))
           if flag is False and (name != "integration" or has_integration)]
    return "yes" if not off else "no: " + ", ".join(off)


def overview_record(row: dict) -> dict:
    now = row["now"]
    next_run = row["next_run"]
    return {
        "id": row["id"],
        "tenant_id": row["tenant_id"],
        "tenant": row["tenant_name"],
        "job_name": row["job_name"],
        "kind": row["kind"],
        "overall": row["overall"],
        "reset_stage": row["reset_stage"],
        "next_run": next_run,
        "next_run_in_seconds": None if next_run is None else round((next_run - now).total_seconds()),
        "retry_at": row.get("retry_at"),  # FAILED: when schedule-next retries it (the due rule), else null
        "active": row["active"],
        "integration_id": row["integration_id"],
        "integration_active": row["integration_active"],
        "tenant_active": row["tenant_active"],
        "last_run_finished_at": row["last_run_finished_at"],
        "error_message": row["error_message"],
    }


def show_overview(overview, as_json: bool) -> None:
    rows, limit, more = overview.rows, overview.limit, overview.more
    records = [overview_record(r) for r in rows]
    if as_json:
        render.emit_json(records)
    else:
        table = []
        for row, rec in zip(rows, records):
            overall = render.truncate(rec["overall"], 24) or "?"
            if rec["reset_stage"]:  # as another program may have written it: any text, of any length
                overall += f" ({render.truncate(rec['reset_stage'].replace('_', ' '), 24)})"
            next_run = next_run_text(rec["overall"], rec["next_run"], rec["retry_at"], row["now"])
            table.append([
                rec["id"], rec["tenant"] or rec["tenant_id"], rec["job_name"], rec["kind"] or "unknown", overall, next_run,
                active_text(rec["active"], rec["integration_active"], rec["tenant_active"], rec["integration_id"] is not None),
                rec["last_run_finished_at"], render.truncate(rec["error_message"], 50),
            ])
        if table:
            render.emit_table(table, ["ID", "TENANT", "JOB", "KIND", "OVERALL", "NEXT RUN", "ACTIVE", "LAST FINISHED", "ERROR"])
        else:
            render.note("no jobs")
    if more:
        render.note(f"showing the first {limit} job{'' if limit == 1 else 's'}; there are more (use --limit or --tenant)")


def step_rows(job: Job) -> list[dict]:
    """One entry per step in display order (the kind's, then the document's others),
    with the phases and the verdict; a kind's step absent from the document is not judged."""
    completion = job.completion
    verdicts = {v.step: v for v in completion.steps}
    kind_steps = {s.step: s for s in (job.kind_steps or ())}
    document = rules.document_steps(job.status) or {}
    out = []
    for name in rules.ordered_step_names(job.kind_steps, job.status):
        body = document.get(name)
        phases = {p: (body.get(p) if isinstance(body, dict) else None) for p in rules.PHASES}
        verdict = verdicts.get(name)
        defined = kind_steps.get(name)
        out.append({
            "step": name,
            "order": defined.position if defined else (body.get("order") if isinstance(body, dict) else None),
            "display_name": (defined.display_name if defined else None) or (body.get("display_name") if isinstance(body, dict) else None),
            **phases,
            "rule": rules.rule_of(name, job.rules),
            "verdict": verdict.verdict if verdict else "absent",
            "detail": verdict.detail if verdict else f"{name}: not in the status document (not judged)",
        })
    return out


def emit_step_grid(steps: list[dict]) -> None:
    """The step x phase grid, in step order, each step with its verdict."""
    grid = [[s["order"], s["step"], s["extraction"], s["transform"], s["embedding"], s["verdict"]] for s in steps]
    if grid:
        render.emit_table(grid, ["#", "STEP", "EXTRACTION", "TRANSFORM", "EMBEDDING", "VERDICT"])
    else:
        render.lines(["(no steps)"])


def job_record(job: Job) -> dict:
    state = job.reset
    completion = job.completion
    return {
        "id": job.id,
        "job_name": job.job_name,
        "tenant_id": job.tenant_id,
        "tenant": job.tenant_name,
        "integration_id": job.integration_id,
        "provider": job.provider,
        "kind": job.kind,
        "overall": job.overall,
        "token": job.token,
        "reset": {
            "stage": state.stage, "deadline": state.deadline, "attempt": state.attempt,
            "gave_up_at": state.gave_up_at, "problem": state.problem,
        },
        "next_run": job.next_run,
        "retry_at": job.retry_at,  # FAILED: when schedule-next retries it (the due rule), else null
        "schedule_interval_minutes": job.schedule_interval_minutes,
        "retry_interval_minutes": job.retry_interval_minutes,
        "retry_count": job.retry_count,
        "last_run_started_at": job.last_run_started_at,
        "last_run_finished_at": job.last_run_finished_at,
        "last_sync_date": job.last_sync_date,
        "error_message": job.error_message,
        "active": job.active,
        "integration_active": job.integration_active,
        "tenant_active": job.tenant_active,
        "all_finished": completion.all_finished,
        "reasons": list(completion.reasons),
        "steps": step_rows(job),
        "status": job.status,
    }


# A run under way, or over and waiting for its reset: the reset sets the next next_run, and the one
# stored is the past one this run started from, which would read as overdue.
AFTER_THIS_RUN = ("RUNNING", "FINISHED")


def next_run_text(overall, next_run, retry_at, now) -> str:
    """When the scheduler starts the job next, as status (a table or one job) shows it (JSON keeps the
    raw next_run). A FAILED job's next_run is stale: the scheduler retries it at retry_at (the due rule)."""
    if overall in AFTER_THIS_RUN:
        return "after this run"
    shown = retry_at if retry_at is not None else next_run
    if shown is None:
        return "-"
    text = f"{humanize.when(shown)} ({humanize.relative(shown, now)})"
    return f"retry {text}" if retry_at is not None else text


def show_job(job: Job, as_json: bool) -> None:
    record = job_record(job)
    if as_json:
        render.emit_json(record)
        return
    now = job.now
    reset = record["reset"]
    overall = record["overall"]
    state_line = overall if isinstance(overall, str) else "missing" if overall is None else rules.show(overall)
    if reset["problem"]:
        state_line += f"  (malformed reset state: {reset['problem']})"
    elif reset["stage"] == lifecycle.GAVE_UP:
        state_line += f"  (reset gave up at {humanize.when(reset['gave_up_at'])})"
    elif reset["stage"] in (lifecycle.CHECK, lifecycle.COOLDOWN):
        what = "cool-down ends" if reset["stage"] == lifecycle.COOLDOWN else f"check {reset['attempt'] + 1}"
        state_line += f"  (reset pending: {what} at {humanize.when(reset['deadline'])}, {humanize.relative(reset['deadline'], now)})"
    header = [
        ("job", f"{job.id} {job.job_name}"),
        ("tenant", f"{job.tenant_id} {job.tenant_name or ''}".strip()),
        ("kind", job.kind or "unknown (every step in the document must finish)"),
        ("integration", "-" if job.integration_id is None else f"{job.integration_id} {job.provider or ''}".strip()),
        ("overall", state_line),
        ("token", job.token or "-"),
        ("active", active_text(job.active, job.integration_active, job.tenant_active, job.integration_id is not None)),
        ("next run", next_run_text(job.overall, job.next_run, job.retry_at, job.now)),
        ("last started", humanize.when(job.last_run_started_at)),
        ("last finished", humanize.when(job.last_run_finished_at)),
        ("last sync", humanize.when(job.last_sync_date)),
        ("error", job.error_message or "-"),
    ]
    width = max(len(k) for k, _ in header)
    render.lines(f"{key:<{width}}  {value}" for key, value in header)
    render.lines([""])
    emit_step_grid(record["steps"])
    if record["reasons"] and job.overall == "FINISHED":
        render.lines(["", "not finished: " + "; ".join(record["reasons"])])


def show_kinds(rows: list[dict], as_json: bool) -> None:
    """Each kind with its steps in order, one table row per step."""
    if as_json:
        render.emit_json(rows)
        return
    table = []
    for row in rows:
        for n, step in enumerate(row["steps"] or [{}]):
            table.append([
                row["kind"] if n == 0 else "",
                step.get("position"), step.get("step"), step.get("display_name"), step.get("rule"),
                {True: "yes", False: "no"}.get(step.get("chain"), ""),
            ])
    # CHAIN: whether schedule-next queues this step's extraction itself once the steps before it finished.
    render.emit_table(table, ["KIND", "#", "STEP", "DISPLAY NAME", "RULE", "CHAIN"])
