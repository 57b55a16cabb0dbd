"""How `etlctl db init` and `etlctl db stop` print."""

from __future__ import annotations

from etlctl.views import render


def show_init(report, as_json: bool, dry_run: bool) -> None:
    """What was created or applied; each migration a constraint refused, on stderr."""
    if as_json:
        render.emit_json({"fresh": report.fresh, "applied": report.applied, "failed": report.failed, "ok": report.ok,
                          "dry_run": dry_run})
    elif report.fresh:
        verb = "would create" if dry_run else "created"
        render.line(f"{verb} etlctl's schema on an empty database: {', '.join(report.applied)}")
    elif report.applied:
        render.line(f"{'would apply' if dry_run else 'applied'} migrations: {', '.join(report.applied)}")
    elif report.ok:
        render.line("etlctl's schema is up to date")
    for name, why in report.failed.items():
        render.reason(f"etlctl: migration {name} not applied: {why}")


def show_stop(stopped: bool, pgdata) -> None:
    if stopped:
        render.line(f"stopped the embedded server in {pgdata}")
    else:
        render.line(f"the embedded server in {pgdata} is not running")
