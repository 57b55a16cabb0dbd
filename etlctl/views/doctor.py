"""How `etlctl doctor` prints its report: each finding with its cause and fixes."""

from __future__ import annotations


def text_lines(report) -> list[str]:
    lines: list[str] = []
    for finding in report.findings:
        lines.append(f"[{finding.severity}] {finding.title}: {finding.summary}")
        lines.append(f"  cause: {finding.cause}")
        for n, fix in enumerate(finding.fixes):
            lines.append(f"  {'fix:  ' if n == 0 else '      '} {fix.command}")
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
