"""`etlctl status` and `etlctl kinds`: read-only views."""

from __future__ import annotations

import click

from etlctl.core.job import parse_ref

from etlctl.cli.options import app, command_name, connection_options, example, output_options


@click.command()
@click.argument("job", metavar="[JOB]", required=False)
@click.option("--tenant", metavar="TENANT", help="Only this tenant (id or name); with JOB, picks among same-named jobs.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="Most jobs to list.")
@connection_options
@output_options
@example("""
etlctl status
etlctl status 7
etlctl status Jira --tenant acme --json
""")
def status(job: str | None, tenant: str | None, limit: int, as_json: bool) -> None:
    """Show all jobs, or one job's steps and phases.

    Without JOB: a table of every job with its state, when it runs next and
    whether it, its integration and its tenant are active. With JOB (an id,
    or a name): a header and the step x phase grid in step order, each step
    with the verdict the completion check gives it.
    """
    from etlctl.store import jobs
    from etlctl.views import jobs as views

    with app().session(command_name()) as session:
        if job is None:
            rows = session.all("jobs_overview", tenant=tenant, limit=limit + 1)
            if not rows:
                jobs.check_tenant(session, tenant)
            views.show_overview(rows, as_json, limit)
        else:
            job_id = jobs.resolve(session, parse_ref(job, tenant))
            views.show_job(jobs.load(session, job_id, job), as_json)


@click.command()
@connection_options
@output_options
@example("""
etlctl kinds
etlctl kinds --json
""")
def kinds(as_json: bool) -> None:
    """Show job kinds, their ordered steps and each step's completion rule.

    A job's kind is the kind named like the job, else like its integration's
    provider (case-insensitively). Rules: `finished` (all three phases must
    finish) or `finished_or_idle` (or all three may stay idle). Operators
    change kinds with SQL on etlctl.job_kinds and etlctl.kind_steps; see
    the README.
    """
    from etlctl.views import render

    with app().session(command_name()) as session:
        rows = session.all("kinds_list")
    if as_json:
        render.emit_json(rows)
        return
    table = []
    for row in rows:
        for n, step in enumerate(row["steps"] or [{}]):
            table.append([
                row["kind"] if n == 0 else "",
                step.get("position"), step.get("step"), step.get("display_name"), step.get("rule"),
            ])
    render.emit_table(table, ["KIND", "#", "STEP", "DISPLAY NAME", "RULE"])
