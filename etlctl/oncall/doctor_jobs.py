"""doctor's judgments about jobs, from their facts (:mod:`etlctl.oncall.facts`):
several RUNNING on one integration, stuck on FINISHED, the timer retrying,
RUNNING far longer than usual, a malformed status document, the next job not
starting. Pure: facts and timings in, findings out (no database access)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from etlctl.core import document, due
from etlctl.core import lifecycle
from etlctl.core import rules
from etlctl.core.humanize import clock_time, duration, relative, when
from etlctl.core.job import short_token
from etlctl.oncall import facts
from etlctl.oncall.doctor_fixes import Fix, psql
from etlctl.oncall.doctor_report import NOTE, PROBLEM, Finding


def multiple_running(conflicts: Sequence[dict], by_id: dict[int, facts.Facts]) -> list[Finding]:
    out = []
    for row in conflicts:
        ids = list(row["job_ids"])
        facts = [by_id[i] for i in ids if i in by_id]
        if not facts:
            continue
        keep = max(facts, key=lambda f: (f.job.last_updated_at or datetime.min.replace(tzinfo=f.now.tzinfo), f.job.id))
        listed = "; ".join(_running_since(f) for f in facts)
        fixes = [Fix(("etlctl", "reset", f.job.id, "--force"),
                     f"warning: discards job {f.job.id}'s run; job {keep.job.id} (the most recently updated) keeps running")
                 for f in facts if f.job.id != keep.job.id]
        fixes.append(Fix(("etlctl", "db", "init"), "creates the index that prevents it, if it is missing"))
        out.append(Finding(
            "multiple_running", PROBLEM,
            f"integration {row['integration_id']} has {len(ids)} RUNNING jobs: {', '.join(str(i) for i in ids)}",
            f"only one job per integration may run; the database did not refuse the second start because the "
            f"one-RUNNING index is missing. {listed}",
            tuple(fixes), tuple(ids), details={"integration_id": row["integration_id"], "keep": keep.job.id},
        ))
    return out


def _running_since(f: facts.Facts) -> str:
    started = f.job.last_run_started_at
    updated = f.job.last_updated_at
    parts = [f"job {f.job.id} ({f.job.job_name})"]
    if started:
        parts.append(f"started {when(started)}")
    if updated:
        parts.append(f"last change {relative(updated, f.now)}")
    return " ".join(parts[:1]) + (": " + ", ".join(parts[1:]) if len(parts) > 1 else "")


def job_findings(f: facts.Facts, timings: lifecycle.Timings) -> list[Finding]:
    out = []
    malformed = malformed_status(f)
    if malformed is not None:
        out.append(malformed)
    if f.job.overall == "FINISHED":
        found = finished_job(f, timings)
        if found is not None:
            out.append(found)
    elif f.job.overall == "RUNNING":
        found = long_running(f)
        if found is not None:
            out.append(found)
    return out


def _step_fixes(f: facts.Facts, then: str) -> list[Fix]:
    token = f.job.token
    fixes = []
    for v in facts.not_done(f):
        if v.verdict == rules.RUNNING:
            tok = ("--token", short_token(token)) if isinstance(token, str) else ()  # the 8 characters history shows
            fixes.append(Fix(("etlctl", "step", f.job.id, v.step, v.phase, "finished", *tok),
                             f"only if the {v.phase} worker really finished {v.step} (check its logs); {then}"))
    return fixes


def _force_fix(f: facts.Facts) -> Fix:
    return Fix(("etlctl", "reset", f.job.id, "--force"),
               "warning: overrides the check; what did not finish is not redone until the next run")


def finished_job(f: facts.Facts, timings: lifecycle.Timings) -> Finding | None:
    job, now = f.job, f.now
    reset = job.reset
    if reset.problem:
        return None  # malformed_status reports it
    done_at = facts.finished_at(f)
    age = (now - done_at).total_seconds() if done_at else None
    passes = job.completion.all_finished
    patience = timings.patience()
    label = job.label()
    overdue = reset.deadline is not None and (now - reset.deadline).total_seconds() > patience
    for_how_long = f"FINISHED for {duration(age)} (since {when(done_at)})" if age is not None else "FINISHED"

    if reset.stage == lifecycle.GAVE_UP or (reset.stage == lifecycle.NOT_STARTED and age is not None and age > patience) \
            or (reset.stage in (lifecycle.CHECK, lifecycle.COOLDOWN) and overdue):
        if reset.stage == lifecycle.GAVE_UP:
            gave = f"at {reset.gave_up_at.strftime('%H:%M')}" if reset.gave_up_at else "(time not recorded)"
            summary = f"{label} {for_how_long}: the reset gave up {gave} and waits for a person"
        elif reset.stage == lifecycle.NOT_STARTED:
            summary = (f"{label} {for_how_long}, longer than the whole reset flow takes ({duration(patience)}), "
                       "with no reset pending")
        else:
            summary = (f"{label} {for_how_long}: its reset was due at {when(reset.deadline)} "
                       f"({relative(reset.deadline, now)}) and nothing has acted on it")
        if passes:
            if reset.stage == lifecycle.GAVE_UP:
                cause = f"every step has finished since the flow gave up ({job.error_message or 'no reason recorded'})"
            else:
                cause = "every step is finished, but nothing runs the reset flow (`etlctl sweep` from cron, or the UI)"
            fixes = [Fix(("etlctl", "reset", job.id), "the check passes: resets it to READY")]
        else:
            cause = facts.blockers_text(f)
            if reset.stage != lifecycle.GAVE_UP:
                cause = f"nothing runs the reset flow, and the check fails: {cause}"
            fixes = _step_fixes(f, "then reset the job (the check passes once every step has finished)") + [_force_fix(f)]
        if reset.stage != lifecycle.GAVE_UP:
            fixes.append(Fix(("etlctl", "cron", "--install"), "runs schedule-next and sweep every minute, so it does not happen again"))
        return Finding("stuck_finished", PROBLEM, summary, cause, tuple(fixes), (job.id,),
                       details={"reset_stage": reset.stage, "finished_seconds_ago": age, "check_passes": passes})

    if passes:
        return None
    if not (reset.attempt >= 1 or (age is not None and age > timings.delay)):
        return None
    if reset.stage == lifecycle.CHECK and reset.attempt >= 1:
        progress = (f"{reset.attempt} of {timings.checks} checks failed; check {reset.attempt + 1} "
                    f"at {clock_time(reset.deadline)} ({relative(reset.deadline, now)})")
    else:
        progress = "the check fails"
    summary = f"{label} {for_how_long}: {progress}"
    cause = facts.blockers_text(f)
    failed = job.completion.failed
    if failed:
        cause += ": a failed phase cannot finish by waiting, the reset gives up"
        fixes = [_force_fix(f)]
    else:
        verdicts = {v.verdict for v in facts.not_done(f)}
        if rules.RUNNING in verdicts:
            cause += ("; its worker never reported it finished (did it get the completion message with "
                      "last_item=True and last_job_item=True?)")
        elif verdicts & {rules.IDLE, rules.MIXED}:
            cause += "; the run was completed before every step ran"
        fixes = _step_fixes(f, "then the next check looks again (why shows what is left)") + [_force_fix(f)]
    return Finding("timer_retrying", PROBLEM, summary, cause, tuple(fixes), (job.id,),
                   details={"reset_stage": reset.stage, "reset_attempt": reset.attempt,
                            "reasons": list(job.completion.reasons)})


def long_running(f: facts.Facts) -> Finding | None:
    found = facts.long_run(f)
    if found is None:
        return None
    elapsed, limit, usual = found
    job = f.job
    still = facts.blockers_text(f, limit=1)
    return Finding(
        "long_running", PROBLEM,
        f"{job.label()} RUNNING for {duration(elapsed)} (since {when(job.last_run_started_at)})",
        f"{usual}; reported past {duration(limit)}" + (f"; still going: {still}" if still else ""),
        (Fix(("etlctl", "why", job.id), "what the run waits for, and since when"),
         Fix(("etlctl", "reset", job.id, "--force"),
             "warning: only if no worker is on this run any more (check the workers' logs): discards the run")),
        (job.id,), details={"elapsed_seconds": elapsed, "limit_seconds": limit},
    )


def malformed_status(f: facts.Facts) -> Finding | None:
    status, job = f.status, f.job
    # What etlctl left unread first (nested too deep, too long): each part once, where it was.
    problems: list[str] = [f"{part.where}: not read ({part.reason})" for part in job.unread]
    if isinstance(status, document.Unreadable):
        pass
    elif not isinstance(status, dict):
        problems.append(f"the status document is {rules.json_type(status)}, not an object")
    else:
        if "steps" not in status:
            problems.append("it has no steps key")
        elif isinstance(status["steps"], document.Unreadable):
            pass
        elif not isinstance(status["steps"], dict):
            problems.append(f"steps is {rules.json_type(status['steps'])}, not an object")
        else:
            for name, body in status["steps"].items():
                verdict = rules.judge_step(name, rules.MUST_FINISH, body)
                if verdict.verdict == rules.MALFORMED and not _unread_phase(body, verdict):
                    problems.append(verdict.detail)
        reset = job.reset
        if reset.problem:
            problems.append(f"its reset state: {reset.problem}")
    overall = job.overall
    known = isinstance(overall, str) and overall in rules.OVERALL_STATES
    if not known and "overall" in (status if isinstance(status, dict) else {}):
        problems.append(f"overall is {rules.show(overall)}, not a state etlctl knows")
    if not problems:
        return None
    in_flight = overall in ("RUNNING", "FINISHED", "FAILED")
    structural = not isinstance(status, dict) or not isinstance(status.get("steps"), dict)
    fixes = []
    if structural and not job.kind:
        fixes.append(Fix(("etlctl", "kinds"), f"no kind matches job name {job.job_name!r} or its provider: add one with "
                                              "its steps (see the README), so that a run has steps to follow"))
    dropped = ("; it drops what etlctl cannot read (" + ", ".join(part.where for part in job.unread)
               + ") and keeps every other key") if job.unread else ""
    if in_flight or not known:
        then = ("then every phase is idle and the reset state clear" if not structural else
                f"the next run rebuilds the steps from kind {job.kind}" if job.kind else
                "once the kind exists, the next run gets its steps")
        fixes.append(Fix(("etlctl", "reset", str(job.id), "--force"), f"warning: ends the run; {then}{dropped}"))
    elif job.unread:
        fixes.append(Fix(("etlctl", "reset", str(job.id), "--force"),
                         f"rewrites it as a reset does{dropped}; warning: next_run becomes now + its interval"))
    elif job.kind or not structural:
        fixes.append(Fix(("etlctl", "status", str(job.id)), "nothing to run now: the next run sets every phase idle"
                         + (f" and rebuilds the steps from kind {job.kind}" if structural else "")))
    shown = overall if known else "no overall" if overall is None else "overall unknown"
    return Finding(
        "malformed_status", PROBLEM, f"{job.label()}, {shown}: {'; '.join(problems)}",
        _writer(job), tuple(fixes), (job.id,), details={"problems": problems},
    )


def _unread_phase(body: object, verdict: rules.StepVerdict) -> bool:
    """A step found malformed only for a part etlctl did not read (reported once, as that part)."""
    if isinstance(body, document.Unreadable):
        return True
    return verdict.phase is not None and isinstance(body, dict) and isinstance(body.get(verdict.phase), document.Unreadable)


def _writer(job) -> str:
    """Who wrote the document last, as far as the audit log knows: never another program for etlctl's own write."""
    audited, updated = job.last_audit_at, job.last_updated_at
    if audited is not None and (updated is None or audited >= updated):
        return (f"the latest recorded change to the job is etlctl's own `etlctl {job.last_audit_command}` at "
                f"{when(audited)}, which keeps what it does not own as it finds it (etlctl never repairs a "
                "document): it was already so, or a worker changed it since without recording a time")
    if audited is not None:
        return (f"another program wrote the job after etlctl's latest change (`etlctl {job.last_audit_command}` at "
                f"{when(audited)}): find the writer (etlctl never repairs a document silently)")
    return "another program wrote it (etlctl has never changed this job, and never repairs a document): find the writer"


def not_starting(f: facts.Facts, plan: dict, troubled: set[int]) -> list[Finding]:
    job, now = f.job, f.now
    if plan["overall"] not in due.STARTABLE:
        return []
    found = due.blocker(plan, now)
    due_at = plan["due_at"]
    due_since = due_at if due_at is not None else job.last_updated_at
    overdue = due_since is not None and (now - due_since).total_seconds() > facts.OVERDUE
    label = f"{job.label()} {plan['overall']}"
    since = f"due since {when(due_since)} ({relative(due_since, now)})" if due_since else "due"
    if found is None:
        if not overdue:
            return []
        return [Finding(
            "not_starting", PROBLEM, f"{label}, {since}, not started",
            "nothing started it: `etlctl schedule-next` is not running (cron), or it fails (see its log)",
            (Fix(("etlctl", "schedule-next"), "starts the due jobs now"),
             Fix(("etlctl", "cron", "--install"), "runs schedule-next and sweep every minute")),
            (job.id,), details={"blocked_by": None},
        )]
    code = found.code
    if code == "inactive":
        if due_at is not None and due_at > now:
            return []
        fixes = []
        if job.active is not True:
            fixes.append(Fix(psql("fix_activate_job", id=job.id), "only if it was deactivated by mistake"))
        if plan["integration_id"] is not None and plan["integration_active"] is not True:
            fixes.append(Fix(psql("fix_activate_integration", id=plan["integration_id"]),
                             "only if it was deactivated by mistake"))
        if plan["tenant_active"] is not True:
            fixes.append(Fix(psql("fix_activate_tenant", id=job.tenant_id),
                             "only if it was deactivated by mistake"))
        return [Finding("not_starting", NOTE, f"{label}, {since}, will not start: {found.text}",
                        "schedule-next starts only jobs whose job, integration and tenant are active "
                        "(a deliberate choice, or a mistake: etlctl cannot tell)",
                        tuple(fixes), (job.id,), details={"blocked_by": code})]
    if code == "retry":
        # found.text begins with FAILED, which the label says already
        return [Finding("not_starting", NOTE, f"{label}, retry at {clock_time(due_at)} ({relative(due_at, now)})",
                        f"its last run failed: {job.error_message or 'no error recorded'} (retries so far: {job.retry_count or 0})",
                        (Fix(("etlctl", "why", job.id), "nothing to do: schedule-next retries it then"),),
                        (job.id,), details={"blocked_by": code})]
    if code == "next_run":
        interval = (plan["schedule_interval_minutes"] or 0) * 60
        ahead = (due_at - now).total_seconds()
        if ahead <= interval + facts.OVERDUE:
            return []
        return [Finding(
            "not_starting", PROBLEM,
            f"{label}: next_run is {when(due_at)}, {duration(ahead)} away, but it runs every {duration(interval)}",
            "next_run was set further ahead than a reset would set it; naive times written in another zone than "
            "--db-timezone (ETLCTL_DB_TIMEZONE) look hours off",
            (Fix(psql("fix_clear_next_run", id=job.id),
                 "makes it due now, only if next_run is wrong"),),
            (job.id,), details={"blocked_by": code, "next_run": due_at},
        )]
    if code == "busy":
        if not overdue:
            return []
        blocker_id = plan["busy_job_id"]
        if blocker_id in troubled:
            return [Finding(
                "not_starting", PROBLEM, f"{label}, {since}, blocked: {found.text}",
                f"job {blocker_id} has a problem of its own (reported here): it holds integration {plan['integration_id']}",
                (Fix(("etlctl", "why", blocker_id), f"fix job {blocker_id} first; this one starts after it is reset"),),
                (job.id,), details={"blocked_by": code, "busy_job_id": blocker_id},
            )]
        return [Finding("not_starting", NOTE, f"{label}, {since}, waits: {found.text}",
                        "one job per integration at a time: it starts after that job is reset to READY",
                        (Fix(("etlctl", "why", blocker_id), "when that one will be done"),),
                        (job.id,), details={"blocked_by": code, "busy_job_id": blocker_id})]
    if code == "no_steps":
        return [Finding("not_starting", PROBLEM, f"{label}: it can never start: {found.text}",
                        "schedule-next queues a run's first step; this job has none",
                        (Fix(("etlctl", "kinds"), "define the kind's steps in etlctl.kind_steps (see the README)"),),
                        (job.id,), details={"blocked_by": code})]
    if code == "no_message":
        # A note: etlctl never starts such a job on purpose (no worker would take its message: WEX Fabric
        # and WEX AD as seeded), so nothing here is broken, and a problem no one can fix would keep a
        # healthy install at exit 3 and teach people to ignore it.
        return [Finding("not_starting", NOTE, f"{label}: etlctl never starts it: {found.text}",
                        "schedule-next starts a run only with a first message a worker accepts "
                        "(etlctl.job_kinds.message_provider); the existing system's own path starts it, if any does",
                        (Fix(("etlctl", "kinds"), "once a worker takes these runs, give the kind its message "
                                                  "(see the README, \"Job kinds\")"),),
                        (job.id,), details={"blocked_by": code})]
    return []
