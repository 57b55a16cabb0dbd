"""`etlctl db init` (:mod:`etlctl.store.schema`) and `etlctl db stop` (:mod:`etlctl.store.embedded`),
shown by :mod:`etlctl.views.db`."""

from __future__ import annotations

import click

from etlctl.cli.options import command_name, decided, connection_options, dry_run_option, example, output_options, session, settings


@click.group()
@example("""
etlctl db init
etlctl db init --dry-run
etlctl db stop
""")
def db() -> None:
    """Create or upgrade etlctl's schema (`db init`); stop the embedded
    server (`db stop`).
    """


@db.command()
@connection_options
@output_options
@dry_run_option
@example("""
etlctl db init
ETLCTL_DSN=postgresql://etl@db.internal/etl etlctl db init --dry-run
""")
def init(as_json: bool, dry_run: bool) -> int:
    """Create etlctl's schema, or apply its pending migrations.

    On an empty database it creates everything, the existing system's tables
    included. On a database the existing system created it only adds etlctl's
    own objects (schema `etlctl`; three indexes and one statistics object on
    etl_jobs) and changes no row or column. Safe to run again: it then does
    nothing. --dry-run applies everything in a transaction and rolls it back.

    Exits 4 when rows in the database break a rule that a migration enforces
    (two RUNNING jobs on one integration); it lists them, and applies
    everything else.

    With no database configured (no --dsn, ETLCTL_DSN, PGHOST, PGDATABASE or
    PGSERVICE) it creates the embedded PostgreSQL server in ETLCTL_HOME, which
    later commands then find by themselves.
    """
    from etlctl.errors import CONFLICT, OK
    from etlctl.store import schema
    from etlctl.views import db as views

    # The one command (with demo and --dsn embedded) allowed to create the embedded server.
    with session(dry_run, create_embedded=True) as s:
        report = schema.init(s)
    code = decided(OK if report.ok else CONFLICT)
    views.show_init(report, as_json, dry_run)
    return code


@db.command()
@connection_options
@example("etlctl db stop")
def stop() -> None:
    """Stop the embedded PostgreSQL server (ETLCTL_HOME/pgdata).

    It acts on nothing else: with --dsn, ETLCTL_DSN or PGHOST/PGDATABASE/PGSERVICE
    naming another database it refuses (exit 2). Stopping a server that is not
    running is not an error. The next command that needs it starts it again.
    """
    from etlctl.store import connection, embedded
    from etlctl.views import db as views

    home = connection.embedded_home(settings(), command_name())
    stopped = embedded.stop(home)
    views.show_stop(stopped, embedded.pgdata(home))
