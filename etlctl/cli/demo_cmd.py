"""`etlctl demo`."""

from __future__ import annotations

import click

from etlctl.cli.options import example, settings


@click.command()
@example("""
etlctl demo
""")
def demo() -> None:
    """Run the whole lifecycle twice on the embedded PostgreSQL server:
    schedule-next starts a Jira and a GitHub job, a simulated worker works
    through the queue with `step`, `complete` finishes them, wait-and-reset
    and sweep reset them to READY, and once next_run passes schedule-next
    starts them again. Each command is printed with its output.

    It uses its own database (etlctl_demo) on the embedded server in
    ETLCTL_HOME (created if there is none), recreated each time; --dsn and
    ETLCTL_DSN are not used.
    Takes about two minutes, most of it waiting for next_run.
    """
    from etlctl.actions.demo import Demo
    from etlctl.views.demo import Transcript

    Demo(settings().home, Transcript()).run()
