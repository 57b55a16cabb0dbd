"""`etlctl status` and `etlctl kinds`: read-only (:mod:`etlctl.oncall.status`, shown by :mod:`etlctl.views.status`)."""

from __future__ import annotations

import click

from etlctl.cli.options import connection_options, example, limit_option, optional_job_argument, output_options, session
from etlctl.core.job import parse_ref


@click.command()
@optional_job_argument
@limit_option(1000, "jobs listed without JOB; a note says when there are more")
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
    from etlctl.oncall import status as reading
    from etlctl.views import status as views

    if job is None:
        with session() as s:
            overview = reading.overview(s, tenant=tenant, limit=limit)
        views.show_overview(overview, as_json)
    else:
        ref = parse_ref(job, tenant)
        with session() as s:
            found = reading.job(s, ref)
        views.show_job(found, as_json)


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
    from etlctl.oncall import status as reading
    from etlctl.views import status as views

    with session() as s:
        rows = reading.kinds(s)
    views.show_kinds(rows, as_json)
