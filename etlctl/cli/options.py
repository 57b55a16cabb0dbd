"""Options shared by many commands, as decorators (in the manner of sqlite-utils).

Connection options are accepted both before the command (``etlctl --dsn X
status``) and after it (``etlctl status --dsn X``); a flag given on the command
line wins over its environment variable, which wins over the default.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

if TYPE_CHECKING:  # imported lazily at run time: --help must stay cheap
    from etlctl.broker.settings import BrokerSettings
    from etlctl.core.lifecycle import Timings
    from etlctl.store.settings import ConnectionSettings


@dataclass
class Invocation:
    """One run of etlctl: what it carries besides the arguments. It lives in click's
    context (the root's ``obj``), and the error handler holds it too, so that it can
    still read -v after the command has ended."""

    verbose: bool = False


def invocation(ctx: click.Context | None = None) -> Invocation:
    ctx = ctx or click.get_current_context()
    return ctx.find_root().ensure_object(Invocation)


_RANK = {ParameterSource.DEFAULT: 0, ParameterSource.DEFAULT_MAP: 1, ParameterSource.ENVIRONMENT: 2, ParameterSource.COMMANDLINE: 3}
_STORE = "etlctl.connection"


def _remember(ctx: click.Context, param: click.Parameter, value):
    source = ctx.get_parameter_source(param.name)
    rank = _RANK.get(source, 0)
    store = ctx.find_root().meta.setdefault(_STORE, {})
    if param.name not in store or rank >= store[param.name][1]:
        store[param.name] = (value, rank)
    return value


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool):
    if value:
        invocation(ctx).verbose = True
    return value


def _seconds(ctx: click.Context, param: click.Parameter, value):
    if value is None:
        return _remember(ctx, param, None)
    from etlctl.core.humanize import parse_duration
    from etlctl.errors import UsageError

    try:
        seconds = parse_duration(value, "--" + param.name.replace("_", "-"))
    except UsageError as exc:
        raise click.BadParameter(f"{value!r}: {exc.message.split(': ', 1)[-1]}") from None
    if seconds < 0.001:
        # PostgreSQL reads 0 as "no limit": a cron job would then wait forever.
        raise click.BadParameter(f"{value!r}: must be at least 1ms (0 would mean no limit at all)")
    return _remember(ctx, param, seconds)


def timings_from(delay: str | None, backoff: str | None, cooldown: str | None) -> Timings:
    """Flags, else ETLCTL_DELAY / ETLCTL_BACKOFF / ETLCTL_COOLDOWN, else 30 / 30,60,180,300 / 30."""
    import os

    from etlctl.core.humanize import parse_backoff, parse_duration
    from etlctl.core.lifecycle import Timings

    defaults = Timings()
    delay = delay if delay is not None else os.environ.get("ETLCTL_DELAY")
    backoff = backoff if backoff is not None else os.environ.get("ETLCTL_BACKOFF")
    cooldown = cooldown if cooldown is not None else os.environ.get("ETLCTL_COOLDOWN")
    return Timings(
        delay=defaults.delay if delay is None else parse_duration(delay, "--delay"),
        backoff=defaults.backoff if backoff is None else parse_backoff(backoff),
        cooldown=defaults.cooldown if cooldown is None else parse_duration(cooldown, "--cooldown"),
    )


_CONNECTION = [
    (("--dsn",), dict(envvar="ETLCTL_DSN", metavar="DSN", help="libpq connection string or postgresql:// URI; `embedded` for the embedded server [env: ETLCTL_DSN]")),
    (("--db-timezone",), dict(envvar="ETLCTL_DB_TIMEZONE", metavar="ZONE",
                              help="Zone of the naive timestamp columns [env: ETLCTL_DB_TIMEZONE; default: UTC]")),
    (("--statement-timeout",), dict(envvar="ETLCTL_STATEMENT_TIMEOUT", metavar="SECONDS", callback=_seconds,
                                    help="Per-statement limit [env: ETLCTL_STATEMENT_TIMEOUT; default: 30s]")),
    (("--lock-timeout",), dict(envvar="ETLCTL_LOCK_TIMEOUT", metavar="SECONDS", callback=_seconds,
                               help="Longest wait for a row lock; then exit 7 [env: ETLCTL_LOCK_TIMEOUT; default: 5s]")),
    (("--idle-timeout",), dict(envvar="ETLCTL_IDLE_TIMEOUT", metavar="SECONDS", callback=_seconds,
                               help="idle_in_transaction_session_timeout [env: ETLCTL_IDLE_TIMEOUT; default: 60s]")),
    (("--connect-timeout",), dict(envvar="ETLCTL_CONNECT_TIMEOUT", metavar="SECONDS", callback=_seconds,
                                  help="Longest wait to connect [env: ETLCTL_CONNECT_TIMEOUT; default: 5s]")),
]


def connection_options(f):
    for decls, kwargs in reversed(_CONNECTION):
        kwargs = {"callback": _remember, **kwargs}
        f = click.option(*decls, expose_value=False, **kwargs)(f)
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbose,
                     help="Show error details and tracebacks.")(f)
    return f


_BROKER_STORE = "etlctl.broker"


def _remember_broker(ctx: click.Context, param: click.Parameter, value):
    if value is not None and not str(value).strip():
        raise click.BadParameter("must not be empty (leave it out, and ETLCTL_AMQP_URL or RABBITMQ_* apply)")
    if value is not None:
        ctx.find_root().meta.setdefault(_BROKER_STORE, {})[param.name] = value
    return value


def broker_options(f):
    """The message broker, for the commands that talk to one. No click envvar: the environment is read
    by etlctl.broker.settings, which knows ETLCTL_AMQP_URL's precedence over the RABBITMQ_* variables."""
    f = click.option("--amqp-heartbeat", metavar="SECONDS", expose_value=False, callback=_remember_broker,
                     help="AMQP heartbeat interval, whole seconds; 0 turns heartbeats off "
                          "[env: ETLCTL_AMQP_HEARTBEAT; default: 60]")(f)
    f = click.option("--amqp-connect-timeout", metavar="SECONDS", expose_value=False, callback=_remember_broker,
                     help="Longest wait to connect to the broker [env: ETLCTL_AMQP_CONNECT_TIMEOUT; default: 5s]")(f)
    return click.option("--amqp-url", metavar="URL", expose_value=False, callback=_remember_broker,
                        help="The message broker: amqp://user:password@host:5672/vhost, or amqps://... "
                             "[env: ETLCTL_AMQP_URL, else RABBITMQ_HOST, RABBITMQ_PORT, RABBITMQ_USER, "
                             "RABBITMQ_PASSWORD, RABBITMQ_VHOST; default: none]")(f)


def broker_settings(ctx: click.Context | None = None) -> BrokerSettings | None:
    """The configured broker (flags, else the environment), or None when there is none."""
    from etlctl.broker import settings as broker

    ctx = ctx or click.get_current_context()
    given = ctx.find_root().meta.get(_BROKER_STORE, {})
    return broker.resolve(given.get("amqp_url"), connect_timeout=given.get("amqp_connect_timeout"),
                          heartbeat=given.get("amqp_heartbeat"))


def output_options(f):
    """--json: machine-readable output on stdout, for scripts and monitoring."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def dry_run_option(f):
    """--dry-run, the same for every command that writes: its session (see :func:`session`) runs
    everything inside one transaction that is rolled back at the end."""
    return click.option("--dry-run", is_flag=True,
                        help="Do everything inside a transaction, then roll it back: show what would change.")(f)


def job_argument(f):
    """JOB (an id, or a name) and --tenant to pick among jobs of the same name."""
    f = click.option("--tenant", metavar="TENANT", help="Tenant id or name, when the job name is in several tenants.")(f)
    return click.argument("job", metavar="JOB")(f)


def timing_options(f):
    f = click.option("--cooldown", metavar="SECONDS", help="Countdown before the reset [env: ETLCTL_COOLDOWN; default: 30]")(f)
    f = click.option("--backoff", metavar="LIST", help="Waits between checks [env: ETLCTL_BACKOFF; default: 30,60,180,300]")(f)
    return click.option("--delay", metavar="SECONDS", help="Wait before the first check [env: ETLCTL_DELAY; default: 30]")(f)


def session(dry_run: bool = False, create_embedded: bool = False):
    """The command's database session; with ``dry_run`` (the shared --dry-run), everything it
    does runs inside one transaction that is rolled back when the session closes."""
    from etlctl.store import connection

    return connection.connect(settings(), command_name(), dry_run=dry_run, create_embedded=create_embedded)


def settings(ctx: click.Context | None = None) -> ConnectionSettings:
    """The connection settings from the flags given before or after the command, else the environment."""
    from etlctl.store import settings as config

    ctx = ctx or click.get_current_context()
    stored = {name: value for name, (value, _) in ctx.find_root().meta.get(_STORE, {}).items() if value is not None}
    kwargs = {}
    if "dsn" in stored:
        kwargs["dsn"] = stored["dsn"]
    if "db_timezone" in stored:
        kwargs["db_timezone"] = config.validate_timezone(stored["db_timezone"])
    for name in ("statement_timeout", "lock_timeout", "idle_timeout"):
        if name in stored:
            kwargs[name] = stored[name]
    if "connect_timeout" in stored:
        kwargs["connect_timeout"] = max(1, int(round(stored["connect_timeout"])))
    return config.ConnectionSettings(**kwargs)


def command_name(ctx: click.Context | None = None) -> str:
    """The command path without the program name, for audit rows: 'reset', 'db init'."""
    ctx = ctx or click.get_current_context()
    return ctx.command_path.split(" ", 1)[1] if " " in ctx.command_path else ctx.command_path


def example(text: str):
    """Append an 'Example' section to a command's help."""

    def decorate(f):
        doc = inspect.cleandoc(f.__doc__ or "")
        lines = "\n".join(f"  {line}" for line in text.strip().splitlines())
        f.__doc__ = f"{doc}\n\n\b\nExample:\n{lines}\n"  # \b: click keeps the block as written
        return f

    return decorate

