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

from etlctl.cli import completion

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
    quiet: bool = False  # -q: only errors (etlctl.views.output)
    timestamps: bool = False  # --log-timestamps / ETLCTL_LOG_TIMESTAMPS: each line starts with the time
    # The exit code a command has decided before it prints (doctor's 3): what it exits with even when the
    # reader of its output leaves early (`etlctl doctor | head -1`); see :func:`decided`.
    decided_exit: int = 0


def decided(code: int) -> int:
    """Record the exit code this run ends with, before printing what justifies it; returns it."""
    invocation().decided_exit = code
    return code


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


def _set_flag(ctx: click.Context, param: click.Parameter, value: bool):
    # -v, -q and --log-timestamps are accepted before and after the command: either turns it on.
    if value:
        setattr(invocation(ctx), param.name, True)
    return value


def _seconds(ctx: click.Context, param: click.Parameter, value):
    """A timeout flag: a duration (humanize.parse_duration), from 1ms to humanize.MAX_TIMEOUT."""
    if value is None:
        return _remember(ctx, param, None)
    from etlctl.core.humanize import MAX_TIMEOUT, parse_duration
    from etlctl.errors import UsageError

    try:
        seconds = parse_duration(value, "--" + param.name.replace("_", "-"), MAX_TIMEOUT)
    except UsageError as exc:
        raise click.BadParameter(f"{value!r}: {exc.message.split(': ', 1)[-1]}") from None
    if seconds < 0.001:
        # PostgreSQL reads 0 as "no limit": a cron job would then wait forever.
        raise click.BadParameter(f"{value!r}: must be at least 1ms (0 would mean no limit at all)")
    return _remember(ctx, param, seconds)


def timings_from(delay: str | None, backoff: str | None, cooldown: str | None) -> Timings:
    """Flags, else ETLCTL_DELAY / ETLCTL_BACKOFF / ETLCTL_COOLDOWN, else 30 / 30,60,180,300 / 30.

    Each wait is at most lifecycle.MAX_WAIT (one day); an error names the flag or the
    variable the value came from."""
    import os

    from etlctl.core.humanize import parse_backoff, parse_duration
    from etlctl.core.lifecycle import MAX_WAIT, Timings

    def given(flag: str | None, name: str) -> tuple[str | None, str]:
        variable = f"ETLCTL_{name.upper()}"
        return (flag, f"--{name}") if flag is not None else (os.environ.get(variable), variable)

    defaults = Timings()
    (delay, delay_name), (backoff, backoff_name), (cooldown, cooldown_name) = (
        given(delay, "delay"), given(backoff, "backoff"), given(cooldown, "cooldown"))
    return Timings(
        delay=defaults.delay if delay is None else parse_duration(delay, delay_name, MAX_WAIT),
        backoff=defaults.backoff if backoff is None else parse_backoff(backoff, backoff_name, MAX_WAIT),
        cooldown=defaults.cooldown if cooldown is None else parse_duration(cooldown, cooldown_name, MAX_WAIT),
    )


_CONNECTION = [
    (("--dsn",), dict(envvar="ETLCTL_DSN", metavar="DSN", help="libpq connection string or postgresql:// URI; `embedded` for the embedded server [env: ETLCTL_DSN]")),
    (("--db-timezone",), dict(envvar="ETLCTL_DB_TIMEZONE", metavar="ZONE",
                              help="Zone of the naive timestamp columns [env: ETLCTL_DB_TIMEZONE; default: UTC]")),
    (("--statement-timeout",), dict(envvar="ETLCTL_STATEMENT_TIMEOUT", metavar="DURATION", callback=_seconds,
                                    help="Per-statement limit, at most 1d [env: ETLCTL_STATEMENT_TIMEOUT; default: 30s]")),
    (("--lock-timeout",), dict(envvar="ETLCTL_LOCK_TIMEOUT", metavar="DURATION", callback=_seconds,
                               help="Longest wait for a row lock, at most 1d; then exit 7 [env: ETLCTL_LOCK_TIMEOUT; default: 5s]")),
    (("--idle-timeout",), dict(envvar="ETLCTL_IDLE_TIMEOUT", metavar="DURATION", callback=_seconds,
                               help="idle_in_transaction_session_timeout, at most 1d [env: ETLCTL_IDLE_TIMEOUT; default: 60s]")),
    (("--connect-timeout",), dict(envvar="ETLCTL_CONNECT_TIMEOUT", metavar="DURATION", callback=_seconds,
                                  help="Longest wait to connect, whole seconds from 2s (libpq's minimum) to 1d [env: ETLCTL_CONNECT_TIMEOUT; default: 5s]")),
]


def connection_options(f):
    for decls, kwargs in reversed(_CONNECTION):
        kwargs = {"callback": _remember, **kwargs}
        f = click.option(*decls, expose_value=False, **kwargs)(f)
    f = click.option("--log-timestamps", "timestamps", is_flag=True, expose_value=False, callback=_set_flag,
                     envvar="ETLCTL_LOG_TIMESTAMPS",
                     help="Start every line with this host's time, for logs (the cron block sets it) "
                          "[env: ETLCTL_LOG_TIMESTAMPS=1].")(f)
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_flag,
                     help="No notes or progress on stderr; data (stdout) and the reason of a non-zero exit stay.")(f)
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_flag,
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


def _complete_jobs(ctx: click.Context, param: click.Parameter, incomplete: str):
    # JOB from the database; of --tenant when it came before JOB on the command line.
    return completion.candidates(lambda: settings(ctx), "jobs", incomplete, ctx.params.get("tenant"))


def _complete_tenants(ctx: click.Context, param: click.Parameter, incomplete: str):
    return completion.candidates(lambda: settings(ctx), "tenants", incomplete)


def tenant_option(what: str, help: str | None = None):
    """--tenant: only that tenant's ``what`` (the same filter in every command that has it)."""
    return click.option("--tenant", metavar="TENANT", shell_complete=_complete_tenants,
                        help=help or f"Only this tenant's {what} (id or name); an unknown tenant exits 5.")


def job_argument(f):
    """JOB (an id, or a name) and --tenant to pick among jobs of the same name."""
    f = tenant_option("jobs", "Tenant id or name, when the job name is in several tenants.")(f)
    return click.argument("job", metavar="JOB", shell_complete=_complete_jobs)(f)


def optional_job_argument(f):
    """[JOB]: one job, or without it every job (of --tenant, when given)."""
    f = tenant_option("jobs", "Only this tenant's jobs (id or name); with JOB, picks among same-named jobs. "
                              "An unknown tenant exits 5.")(f)
    return click.argument("job", metavar="[JOB]", required=False, shell_complete=_complete_jobs)(f)


def jobs_argument(f):
    """[JOB]...: any number of jobs (watch)."""
    return click.argument("jobs", metavar="[JOB]...", nargs=-1, shell_complete=_complete_jobs)(f)


# --limit N means one thing everywhere: at most N rows shown or acted on (each command's help says
# which); a listing that has more says so on stderr. Above MAX_LIMIT it is a usage error (exit 2).
MAX_LIMIT = 1_000_000


def limit_option(default: int, counted: str):
    """--limit N: at most N ``counted`` (for example "jobs listed"), from 1 to MAX_LIMIT."""
    return click.option("--limit", type=click.IntRange(min=1, max=MAX_LIMIT), default=default, show_default=True,
                        metavar="N", help=f"At most N {counted}.")


def timing_options(f):
    # Durations (30, 45s, 1m10s, 1h30m...), each at most lifecycle.MAX_WAIT (1d).
    f = click.option("--cooldown", metavar="DURATION",
                     help="Countdown before the reset, at most 1d [env: ETLCTL_COOLDOWN; default: 30s]")(f)
    f = click.option("--backoff", metavar="LIST",
                     help="Waits between checks, each at most 1d [env: ETLCTL_BACKOFF; default: 30,60,180,300]")(f)
    return click.option("--delay", metavar="DURATION",
                        help="Wait before the first check, at most 1d [env: ETLCTL_DELAY; default: 30s]")(f)


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
        kwargs["connect_timeout"] = config.validate_connect_timeout(stored["connect_timeout"])
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

