"""How `etlctl doctor` prints its report: each finding with its cause and fixes, as text or JSON."""

from __future__ import annotations

from etlctl.views import render


def show(report, as_json: bool) -> None:
    if as_json:
        render.emit_json(record(report))
    else:
        render.lines(text_lines(report))


def record(report) -> dict:
    return {"healthy": report.healthy, "problems": report.problems, "notes": report.notes, "now": report.now,
            "jobs_checked": report.jobs_checked, "skipped": report.skipped,
            "findings": [finding_record(f) for f in report.findings]}


def finding_record(finding) -> dict:
    f = finding
    return {"code": f.code, "severity": f.severity, "title": f.title, "job_ids": list(f.job_ids),
            "summary": f.summary, "cause": f.cause,
            "fix": [fix_record(fix) for fix in f.fixes], "details": f.details}


def fix_record(fix) -> dict:
    # A template's placeholders (DSN, PRIMARY) fail when run: an empty command, so that
    # `jq -r '.findings[].fix[].command' | sh` skips it, and the pattern under its own name.
    if fix.template:
        return {"command": "", "template": fix.command, "note": fix.note}
    return {"command": fix.command, "note": fix.note}


def text_lines(report) -> list[str]:
    lines: list[str] = []
    for finding in report.findings:
        lines.append(f"[{finding.severity}] {finding.title}: {finding.summary}")
        lines.append(f"  cause: {finding.cause}")
        for n, fix in enumerate(finding.fixes):
            label = "hint: " if fix.template else "fix:  " if n == 0 else "      "
            lines.append(f"  {label} {fix.command}")
            if fix.note:
                lines.append(f"         # {fix.note}")
        lines.append("")
    for skipped in report.skipped:
        lines.append(f"skipped: {skipped}")
    counts = f"{report.problems} problem{'s' if report.problems != 1 else ''}"
    if report.notes:
        counts += f", {report.notes} note{'s' if report.notes != 1 else ''}"
    checked = f"{report.jobs_checked} job{'s' if report.jobs_checked != 1 else ''} checked"
    if report.healthy:
        lines.append(f"no problems found ({checked}{', ' + counts.split(', ', 1)[1] if report.notes else ''})")
    else:
        lines.append(f"{counts} ({checked})")
    return lines
