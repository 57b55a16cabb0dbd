"""`etlctl run`: the sweep, schedule-next and the relay as one long-running process
(:mod:`etlctl.actions.run`), logged by :mod:`etlctl.views.run`."""

from __future__ import annotations

import click

from etlctl.cli.options import (
    broker_options,
    broker_settings,
    command_name,
    connection_options,
    example,
    invocation,
    output_options,
    settings,
    timing_options,
    timings_from,
)


@click.command()
@click.option("--max-sleep", metavar="DURATION",
              help="Longest wait between two passes, at most 1d: how late a change that sends no NOTIFY (a "
                   "next_run set by hand, a worker's SQL) is seen [env: ETLCTL_MAX_SLEEP; default: 30s]")
@click.option("--health-file", metavar="PATH",
              help="Touch PATH after every successful pass, for a liveness probe [env: ETLCTL_HEALTH_FILE]")
@click.option("--chain-grace", metavar="DURATION", default="60s", show_default=True,
              help="As schedule-next's: queue a RUNNING job's next step only when nothing touched it for this long.")
@timing_options
@broker_options
@connection_options
@output_options
@example("""
etlctl run
etlctl run --max-sleep 10s --health-file /run/etlctl/healthy --json
""")
def run(max_sleep, health_file, chain_grace, delay, backoff, cooldown, as_json) -> None:
    """Run the sweep, schedule-next and (with a broker) the relay as one
    service, acting within a second of every deadline; until SIGTERM (exit
    143) or SIGINT (130).

    After each pass it sleeps until the earliest deadline in the database (a
    reset-flow step, a due next_run, a FAILED job's retry, a message to
    publish), at most --max-sleep, and wakes at once on a NOTIFY: a job
    finished or was reset, a step changed, a message was queued. Writers that
    send no NOTIFY (next_run changed by SQL, the existing workers' updates)
    are seen within --max-sleep.

    Safe on several hosts, and beside cron's sweep and schedule-next: every
    write is guarded, and a pass that finds another one at work looks again
    shortly. It survives database and broker restarts (said once per outage,
    retried with backoff). One log line per action, with a timestamp (--json:
    one object per line); quiet otherwise (-v: a heartbeat line a minute).

    SIGTERM and SIGINT let the statement in flight finish; a second one stops
    at once. SIGHUP reads the configuration again (the flags and environment
    it started with, and the files they name: ETLCTL_AMQP_PASSWORD_FILE,
    ~/.pgpass, the service file) and reconnects to the database and the
    broker. The first connections must work: exit 6 or 8 otherwise.
    """
    import os
    import socket
    from pathlib import Path

    from etlctl.actions import run as running
    from etlctl.core.humanize import MAX_CHAIN_GRACE, parse_duration
    from etlctl.errors import LogReaderGone, UsageError
    from etlctl.store import connection
    from etlctl.views import output
    from etlctl.views import run as views

    ctx = click.get_current_context()
    command = command_name(ctx)

    def load_config() -> running.RunConfig:
        # Everything from the flags given at the start and the environment (read again on SIGHUP).
        name, value = ("--max-sleep", max_sleep) if max_sleep is not None else ("ETLCTL_MAX_SLEEP", os.environ.get("ETLCTL_MAX_SLEEP"))
        sleep = running.DEFAULT_MAX_SLEEP if value is None else parse_duration(value, name, running.MAX_MAX_SLEEP)
        if sleep <= 0:
            raise UsageError(message=f"invalid {name} {value!r}: expected a wait longer than 0, such as 30s or 500ms")
        health = health_file if health_file is not None else os.environ.get("ETLCTL_HEALTH_FILE") or None
        return running.RunConfig(
            settings=settings(ctx), timings=timings_from(delay, backoff, cooldown), broker=broker_settings(ctx),
            max_sleep=sleep, chain_grace=parse_duration(chain_grace, "--chain-grace", MAX_CHAIN_GRACE),
            health_file=Path(health) if health else None)

    if not as_json:
        invocation().timestamps = True  # a log: every line says when
    printer = views.RunPrinter(as_json, invocation().verbose, socket.gethostname(), os.getpid())
    try:
        running.run(load_config, lambda db: connection.open_session(db, command), printer)
    except output.ReaderLeft:
        # For a one-shot command a reader that leaves is no error (exit 0); for a service it is: exit 0
        # would tell systemd it is done, and nothing would act on the deadlines any more.
        raise LogReaderGone() from None
