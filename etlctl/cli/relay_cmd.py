"""`etlctl relay`: publish the outbox to RabbitMQ (:mod:`etlctl.actions.relay`), shown by
:mod:`etlctl.views.relay`."""

from __future__ import annotations

import click

from etlctl.cli.options import (
    broker_options,
    broker_settings,
    command_name,
    connection_options,
    dry_run_option,
    example,
    output_options,
    session,
    settings,
)


@click.command()
@click.option("--follow", is_flag=True,
              help="Stay up: publish each message as it is queued (woken by NOTIFY), until SIGINT or SIGTERM.")
@click.option("--poll", metavar="SECONDS", default="5", show_default=True,
              help="With --follow: look at the outbox this often even when no NOTIFY comes.")
@click.option("--batch", type=click.IntRange(min=1, max=10000), default=200, show_default=True,
              help="Messages per transaction; also the most that a crash can publish twice.")
@dry_run_option
@broker_options
@connection_options
@output_options
@example("""
etlctl relay
etlctl relay --dry-run
etlctl relay --follow --amqp-url amqps://etl@rabbit.internal/pulse_etl
""")
def relay(follow, poll, batch, dry_run, as_json) -> None:
    """Publish every pending message of the outbox (etlctl.queue) to RabbitMQ,
    oldest first, then exit; quiet when there is nothing to publish.

    Each goes to its queue (extraction_queue_<tier>, declared durable with the
    contract's arguments, or used as it is) through the default exchange, as
    a persistent JSON message with message_id = its outbox id. It is marked
    published only once the broker confirmed it; a nack or a return leaves it
    pending (exit 3) for the next pass. A message whose run is over is never
    published: it is marked skipped, with the reason. Safe on several hosts at
    once: no message is published twice, except the batch in flight when a
    relay dies between the broker's confirm and its commit. Exit 8 when a
    message is to be published and the broker cannot be reached: nothing is
    marked. Skipping needs no broker: only stale messages, exit 0.

    --follow stays up, woken by the NOTIFY of each transaction that queues a
    message and looking every --poll seconds anyway; it reconnects to the
    database and the broker with backoff, saying so once per outage, and
    stops on SIGINT (130) or SIGTERM (143) once the batch in flight is
    recorded.
    """
    from etlctl.actions import relay as relaying
    from etlctl.core.humanize import parse_duration
    from etlctl.errors import NotConfirmed, UsageError
    from etlctl.views import relay as views

    printer = views.RelayPrinter(as_json, dry_run, follow)
    broker = broker_settings()
    if follow:
        if dry_run:
            raise UsageError(message="--follow and --dry-run do not go together: --dry-run shows one pass")
        interval = parse_duration(poll, "--poll")
        if interval <= 0:
            raise UsageError(message=f"invalid --poll {poll!r}: expected a wait longer than 0, such as 5 or 500ms")
        from etlctl.actions import relay_follow
        from etlctl.store import connection

        db, command = settings(), command_name()
        relay_follow.follow(lambda: connection.open_session(db, command), broker, batch=batch, poll=interval,
                            on_batch=printer.batch, note=views.note)
        return
    with session(dry_run) as s:
        report = relaying.run_once(s, broker, batch=batch, on_batch=printer.batch)
    printer.finish()
    if report.error is not None:
        raise report.error
    if report.not_confirmed:
        count, reasons = views.not_confirmed_summary(report.not_confirmed)
        raise NotConfirmed(count=count, reasons=reasons)
