"""Where the message broker is: settings read from a URL or from the existing
system's ``RABBITMQ_*`` variables, validated before any connection. Pure parsing.

Precedence: ``--amqp-url`` (passed in as ``amqp_url``), else ``ETLCTL_AMQP_URL``,
else the existing system's ``RABBITMQ_HOST``, ``RABBITMQ_PORT``, ``RABBITMQ_USER``,
``RABBITMQ_PASSWORD`` and ``RABBITMQ_VHOST`` when any of them is set (the others
then take the existing system's defaults, so etlctl reaches the broker its
workers reach), else no broker at all (``None``).

The password may instead live in a file of its own, ``ETLCTL_AMQP_PASSWORD_FILE``
(readable by its owner only, like ``~/.pgpass``): it is read when the URL has no
password, or, with the ``RABBITMQ_*`` variables, when ``RABBITMQ_PASSWORD`` is
not set. That is how cron gets it: the crontab block carries the settings
(:func:`cron_environment`) and never the password.

The URL is an AMQP URI as pika reads it: ``amqp://user:password@host:port/vhost``,
with ``amqps://`` for TLS (port 5671 by default, server certificate checked
against the system's CAs, or the ``cacertfile`` given in the query). The vhost is
the path without its leading slash, percent-encoded (``%2F`` for ``/``); no path
means ``/``.

A bad value is a :class:`~etlctl.errors.UsageError` (exit 2) naming where it came
from, never quoting the URL: it may hold a password.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from etlctl.core.humanize import parse_duration
from etlctl.errors import UsageError

PASSWORD_FILE = "ETLCTL_AMQP_PASSWORD_FILE"
DEFAULT_CONNECT_TIMEOUT = 5.0  # seconds, like the database's
DEFAULT_HEARTBEAT = 60  # seconds; RabbitMQ's own default. 0 turns heartbeats off.

# The existing system's defaults for each variable (its queue_manager.py).
EXISTING_SYSTEM_DEFAULTS = {
    "RABBITMQ_HOST": "localhost",
    "RABBITMQ_PORT": "5672",
    "RABBITMQ_USER": "etl_user",
    "RABBITMQ_PASSWORD": "etl_password",
    "RABBITMQ_VHOST": "pulse_etl",
}

# Query parameters of an AMQP URI that etlctl understands (pika's and RabbitMQ's names).
TLS_QUERY = ("cacertfile", "certfile", "keyfile", "server_name_indication")
# Not connection_timeout: RabbitMQ's URI spec counts it in milliseconds, pika has none; a
# misread unit would be silent, so the connect timeout has its own setting.
URL_QUERY = (*TLS_QUERY, "heartbeat")
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    user: str
    password: str = field(repr=False)  # never printed: `shown` and repr() leave it out
    vhost: str = "/"
    tls: bool = False
    cafile: str | None = None  # None: the system's CAs
    certfile: str | None = None  # a client certificate, for brokers that ask for one
    keyfile: str | None = None
    server_name: str | None = None  # the name the certificate must carry, when it is not `host`
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    heartbeat: int = DEFAULT_HEARTBEAT
    source: str = "ETLCTL_AMQP_URL"  # where the settings came from, for messages

    @property
    def shown(self) -> str:
        """The broker as a URL without its password, for messages."""
        scheme = "amqps" if self.tls else "amqp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = urllib.parse.quote(self.user, safe="")
        return f"{scheme}://{user}@{host}:{self.port}/{urllib.parse.quote(self.vhost, safe='')}"

    def __str__(self) -> str:
        return self.shown


def resolve(amqp_url: str | None = None, environ: Mapping[str, str] | None = None,
            connect_timeout: str | float | None = None, heartbeat: str | float | None = None) -> BrokerSettings | None:
    """The configured broker, or None when there is none.

    ``amqp_url``, ``connect_timeout`` and ``heartbeat`` are the command line's
    values (None when not given); each beats its ``ETLCTL_AMQP_*`` variable
    (``ETLCTL_AMQP_CONNECT_TIMEOUT``, ``ETLCTL_AMQP_HEARTBEAT``), and the
    heartbeat beats the URL's ``heartbeat`` query, which beats the default.
    """
    env = os.environ if environ is None else environ
    if amqp_url:
        settings = parse_url(amqp_url, "--amqp-url")
        if not url_has_password(amqp_url) and env.get(PASSWORD_FILE):
            settings = _replace(settings, password=read_password_file(env[PASSWORD_FILE]))
    elif env.get("ETLCTL_AMQP_URL"):
        settings = parse_url(env["ETLCTL_AMQP_URL"], "ETLCTL_AMQP_URL")
        if not url_has_password(env["ETLCTL_AMQP_URL"]) and env.get(PASSWORD_FILE):
            settings = _replace(settings, password=read_password_file(env[PASSWORD_FILE]))
    elif any(env.get(name) for name in EXISTING_SYSTEM_DEFAULTS):
        settings = from_existing_system(env)
        if "RABBITMQ_PASSWORD" not in env and env.get(PASSWORD_FILE):
            settings = _replace(settings, password=read_password_file(env[PASSWORD_FILE]))
    else:
        return None
    timeout = connect_timeout if connect_timeout is not None else env.get("ETLCTL_AMQP_CONNECT_TIMEOUT")
    if timeout is not None:
        name = "--amqp-connect-timeout" if connect_timeout is not None else "ETLCTL_AMQP_CONNECT_TIMEOUT"
        settings = _replace(settings, connect_timeout=_connect_timeout(timeout, name))
    beat = heartbeat if heartbeat is not None else env.get("ETLCTL_AMQP_HEARTBEAT")
    if beat is not None:
        name = "--amqp-heartbeat" if heartbeat is not None else "ETLCTL_AMQP_HEARTBEAT"
        settings = _replace(settings, heartbeat=_heartbeat(beat, name))
    return settings


def from_existing_system(env: Mapping[str, str]) -> BrokerSettings:
    """The existing system's variables, each with its default there."""
    value = {name: env.get(name, default) for name, default in EXISTING_SYSTEM_DEFAULTS.items()}
    return BrokerSettings(
        host=value["RABBITMQ_HOST"],
        port=_port(value["RABBITMQ_PORT"], "RABBITMQ_PORT"),
        user=value["RABBITMQ_USER"],
        password=value["RABBITMQ_PASSWORD"],
        vhost=value["RABBITMQ_VHOST"],
        source="RABBITMQ_* variables",
    )


def parse_url(url: str, source: str = "ETLCTL_AMQP_URL") -> BrokerSettings:
    """An ``amqp://`` or ``amqps://`` URL; ``source`` names it in errors (the URL itself never appears)."""
    def invalid(why: str) -> UsageError:
        return UsageError(message=f"invalid {source}: {why}")

    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise invalid("expected amqp://user:password@host:port/vhost (port 0-65535)") from None
    if port == 0:
        raise invalid("port 0")
    if parts.scheme not in _DEFAULT_PORTS:
        raise invalid("expected amqp://user:password@host:port/vhost or amqps://...")
    if not parts.hostname:
        raise invalid("no host")
    if parts.fragment:
        raise invalid("a URL fragment (#...) means nothing here")
    query = _query(parts.query, invalid)
    settings = BrokerSettings(
        host=parts.hostname,
        port=port if port is not None else _DEFAULT_PORTS[parts.scheme],
        # pika's defaults when the URL names no user: guest/guest.
        user=urllib.parse.unquote(parts.username) if parts.username is not None else "guest",
        password=urllib.parse.unquote(parts.password) if parts.password is not None else "guest",
        vhost=urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        tls=parts.scheme == "amqps",
        cafile=query.get("cacertfile"),
        certfile=query.get("certfile"),
        keyfile=query.get("keyfile"),
        server_name=query.get("server_name_indication"),
        source=source,
    )
    if not settings.tls and any(key in query for key in TLS_QUERY):
        raise invalid(f"{', '.join(k for k in TLS_QUERY if k in query)} need an amqps:// URL")
    if "heartbeat" in query:
        settings = _replace(settings, heartbeat=_heartbeat(query["heartbeat"], f"heartbeat in {source}"))
    return settings


def _query(text: str, invalid) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise invalid("unreadable query string") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key not in URL_QUERY:
            raise invalid(f"unknown query parameter {key!r}; known: {', '.join(URL_QUERY)} "
                          "(the connect timeout is ETLCTL_AMQP_CONNECT_TIMEOUT)")
        if key in query:
            raise invalid(f"query parameter {key!r} given twice")
        query[key] = value
    return query


def _port(text: str, name: str) -> int:
    digits = str(text).strip()
    if not (digits.isascii() and digits.isdigit()) or not 0 < int(digits) < 65536:  # "³".isdigit() is True
        raise UsageError(message=f"invalid {name} {text!r}: expected a port number such as 5672")
    return int(text)


def _connect_timeout(value: str | float, name: str) -> float:
    seconds = parse_duration(value, name) if isinstance(value, str) else float(value)
    if seconds <= 0:
        raise UsageError(message=f"invalid {name} {value!r}: expected a wait longer than 0, such as 5 or 500ms")
    return seconds


def _heartbeat(value: str | float, name: str) -> int:
    seconds = parse_duration(value, name) if isinstance(value, str) else float(value)
    # AMQP negotiates whole seconds; 0 means no heartbeats.
    if seconds != int(seconds) or not 0 <= seconds <= 65535:
        raise UsageError(message=f"invalid {name} {value!r}: expected whole seconds from 0 (off) to 65535")
    return int(seconds)


def _replace(settings: BrokerSettings, **changes) -> BrokerSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


def url_has_password(url: str) -> bool:
    """Whether an AMQP URL carries a password (``amqp://user:password@host``), even an empty one."""
    try:
        return urllib.parse.urlsplit(url.strip()).password is not None
    except ValueError:
        return False


def read_password_file(path: str) -> str:
    """The password in ``path`` (its first line). Like libpq with ~/.pgpass, a file that its group or
    others may read or write is refused: a password must not be readable by anyone else."""
    name = f"{PASSWORD_FILE} {path}"
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise UsageError(message=f"{name} is open to its group or others (mode {mode & 0o777:o}): "
                                     f"chmod 600 {path}")
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
    except OSError as exc:
        raise UsageError(message=f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(message=f"cannot read {name}: not UTF-8 text") from None
    return first.rstrip("\r\n")


def cron_environment(settings: BrokerSettings | None, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The variables a crontab block must set so that cron's etlctl reaches this broker: never the password.

    The broker as it was found: an ``ETLCTL_AMQP_URL`` without its password (for
    --amqp-url too), or the ``RABBITMQ_*`` variables that were set, except
    ``RABBITMQ_PASSWORD``; then ``ETLCTL_AMQP_PASSWORD_FILE`` when it is set (cron
    reads the password there: see :func:`password_left_out` for when it is
    missing), and the connect timeout and heartbeat when they are not the
    defaults. Nothing when no broker is configured.
    """
    env = os.environ if environ is None else environ
    if settings is None:
        return []
    out: list[tuple[str, str]] = []
    if settings.source == "RABBITMQ_* variables":
        out += [(name, env[name]) for name in EXISTING_SYSTEM_DEFAULTS
                if name != "RABBITMQ_PASSWORD" and env.get(name)]
    else:
        out.append(("ETLCTL_AMQP_URL", url_without_password(settings)))
    if env.get(PASSWORD_FILE):
        out.append((PASSWORD_FILE, os.path.abspath(env[PASSWORD_FILE])))
    if settings.connect_timeout != DEFAULT_CONNECT_TIMEOUT:
        out.append(("ETLCTL_AMQP_CONNECT_TIMEOUT", f"{settings.connect_timeout:g}"))
    if settings.heartbeat != DEFAULT_HEARTBEAT:
        out.append(("ETLCTL_AMQP_HEARTBEAT", str(settings.heartbeat)))
    return out


def password_left_out(settings: BrokerSettings | None, environ: Mapping[str, str] | None = None) -> bool:
    """True when cron's etlctl would lack the password: it was given in the URL or in RABBITMQ_PASSWORD,
    which the crontab never carries, and no ETLCTL_AMQP_PASSWORD_FILE holds it. Say so, and where it goes."""
    env = os.environ if environ is None else environ
    if settings is None or env.get(PASSWORD_FILE):
        return False
    if settings.source == "RABBITMQ_* variables":
        return "RABBITMQ_PASSWORD" in env
    return settings.password != "guest"  # what a URL without a password means: cron's URL means the same


def url_without_password(settings: BrokerSettings) -> str:
    """An AMQP URL for these settings with no password in it, and every query parameter the settings hold."""
    query = {"cacertfile": settings.cafile, "certfile": settings.certfile, "keyfile": settings.keyfile,
             "server_name_indication": settings.server_name}
    text = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    return settings.shown + (f"?{text}" if text else "")
