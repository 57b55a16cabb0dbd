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
    ETLCTL_DSN are not used. With a message broker configured
    (ETLCTL_AMQP_URL, or RABBITMQ_HOST...) schedule-next publishes each
    message and the worker receives it from RabbitMQ, from the demo's own
    queue extraction_queue_etlctl_demo; without one, the messages wait in
    the outbox (etlctl.queue) and the worker claims them there.
    Takes about two minutes, most of it waiting for next_run.
    """
    from etlctl.actions.demo import Demo
    from etlctl.views.demo import Transcript

    Demo(settings().home, Transcript()).run()
