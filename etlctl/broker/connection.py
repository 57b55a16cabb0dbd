"""Connections to RabbitMQ, and the one place where pika's errors become etlctl errors.

Every connection is bounded: ``connect_timeout`` covers TCP, TLS and the AMQP
handshake (pika's ``socket_timeout`` and ``stack_timeout``), one attempt, and
heartbeats every ``heartbeat`` seconds. Credentials are erased from pika's
parameters once connected, and no message ever carries the password.

A connection hands out two kinds of channel. Publishing has its own (see
``publisher.py``); everything that can make the broker close a channel (a
declare with other arguments, a passive declare or a ``basic_get`` on a missing
queue) runs on the *control* channel, which is reopened after such a close.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from etlctl.broker.settings import BrokerSettings
from etlctl.errors import BrokerError, BrokerRefused, BrokerUnavailable, EtlctlError, UsageError

# AMQP reply codes the broker closes a channel with, that callers handle themselves.
ACCESS_REFUSED = 403
NOT_FOUND = 404
PRECONDITION_FAILED = 406


@dataclass(frozen=True)
class QueueInfo:
    name: str
    messages: int  # ready to deliver (not those delivered and unacknowledged)
    consumers: int


class BrokerConnection:
    """One AMQP connection; use as a context manager or call ``close()``."""

    def __init__(self, settings: BrokerSettings, name: str = "etlctl") -> None:
        self.settings = settings
        self._conn = _open(settings, name)
        self._control = None

    def __enter__(self) -> BrokerConnection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._conn.is_open

    def channel(self):
        """A new pika BlockingChannel."""
        with self.translating():
            return self._conn.channel()

    def control_channel(self):
        """The channel for declares and peeks; a fresh one if the broker closed the last."""
        if self._control is None or not self._control.is_open:
            self._control = self.channel()
        return self._control

    def declare_queue(self, name: str, arguments: dict) -> QueueInfo | int:
        """Declare ``name`` durable with exactly ``arguments``. When the broker refuses (and closes the
        control channel, which is reopened), the reply code instead: PRECONDITION_FAILED, the queue
        exists with other arguments; ACCESS_REFUSED, the user may not configure it (a user with write
        and read permissions only: a passive declare, which needs none, still works)."""
        return self._on_control((PRECONDITION_FAILED, ACCESS_REFUSED), "queue_declare", queue=name, durable=True,
                                arguments=arguments)

    def inspect_queue(self, name: str) -> QueueInfo | None:
        """A passive declare: the queue's counts, whatever its arguments; None when there is no such queue."""
        found = self._on_control((NOT_FOUND,), "queue_declare", queue=name, passive=True)
        return found if isinstance(found, QueueInfo) else None

    def _on_control(self, expected_codes: tuple[int, ...], method: str, **kwargs) -> QueueInfo | int:
        from pika.exceptions import ChannelClosedByBroker

        channel = self.control_channel()
        with self.translating():
            try:
                frame = getattr(channel, method)(**kwargs)
            except ChannelClosedByBroker as exc:
                if exc.reply_code not in expected_codes:
                    raise
                self._control = None  # closed by the broker: the next call opens another
                return exc.reply_code
        return QueueInfo(frame.method.queue, frame.method.message_count, frame.method.consumer_count)

    def process_events(self, time_limit: float) -> None:
        """Send what is buffered and handle what arrived (confirms, returns, heartbeats),
        waiting at most ``time_limit`` seconds."""
        with self.translating():
            self._conn.process_data_events(time_limit=time_limit)

    @contextlib.contextmanager
    def translating(self) -> Iterator[None]:
        try:
            yield
        except EtlctlError:
            raise
        except Exception as exc:
            translated = translate(exc, self.settings)
            if translated is None:
                raise
            raise translated from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._conn.is_open:
                self._conn.close()


def connect(settings: BrokerSettings, name: str = "etlctl") -> BrokerConnection:
    """An open connection, or BrokerUnavailable / BrokerRefused (exit 8)."""
    return BrokerConnection(settings, name)


def parameters(settings: BrokerSettings, name: str = "etlctl"):
    """pika's connection parameters for these settings."""
    import pika

    ssl_options = None
    if settings.tls:
        ssl_options = pika.SSLOptions(_tls_context(settings), server_hostname=settings.server_name or settings.host)
    return pika.ConnectionParameters(
        host=settings.host,
        port=settings.port,
        virtual_host=settings.vhost,
        credentials=pika.PlainCredentials(settings.user, settings.password, erase_on_connect=True),
        ssl_options=ssl_options,
        heartbeat=settings.heartbeat,
        socket_timeout=settings.connect_timeout,
        stack_timeout=settings.connect_timeout,
        connection_attempts=1,
        # Shown by `rabbitmqctl list_connections client_properties` and the management UI.
        client_properties={"connection_name": name, "product": "etlctl"},
    )


def _tls_context(settings: BrokerSettings):
    import ssl

    # The system's CAs unless a CA file is given; the hostname is checked against server_name or host.
    try:
        context = ssl.create_default_context(cafile=settings.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(message=f"invalid {settings.source}: cannot use its cacertfile: {exc.strerror or exc}") from None
    if settings.certfile:
        try:
            context.load_cert_chain(settings.certfile, settings.keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(message=f"invalid {settings.source}: cannot use its certfile/keyfile: {exc.strerror or exc}") from None
    return context


def _open(settings: BrokerSettings, name: str):
    import pika

    _quiet_pika()
    params = parameters(settings, name)
    try:
        return pika.BlockingConnection(params)
    except Exception as exc:
        translated = translate(exc, settings)
        if translated is None:
            raise
        raise translated from exc


def _quiet_pika() -> None:
    """pika logs every failure it raises, with tracebacks, at ERROR; with no logging set up, Python
    would print those on stderr. etlctl reports each failure once, as its own one-line error."""
    import logging

    logger = logging.getLogger("pika")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def translate(exc: BaseException, settings: BrokerSettings) -> EtlctlError | None:
    """The etlctl error for a pika (or socket, or TLS) error; None for anything else."""
    import ssl

    from pika import exceptions as pe
    from pika.adapters.utils import connection_workflow as workflow

    detail = _scrub(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc), settings)
    target = settings.shown
    if isinstance(exc, (pe.ProbableAuthenticationError, pe.AuthenticationError)) or _closed_with(exc, 403):
        return BrokerRefused(detail, target=target, what=f"the login of user {settings.user!r}: wrong user name or password")
    if isinstance(exc, pe.ProbableAccessDeniedError) or _closed_with(exc, 530):
        if "not found" in str(exc):
            return BrokerRefused(detail, target=target, what=f"the vhost {settings.vhost!r}: it does not exist")
        return BrokerRefused(detail, target=target,
                             what=f"user {settings.user!r} access to the vhost {settings.vhost!r}: no permissions there")
    if isinstance(exc, pe.ChannelClosedByBroker):
        return BrokerError(detail, reason=_scrub(f"{exc.reply_text} ({exc.reply_code})", settings))
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = "" if settings.cafile else " (give the CA with ?cacertfile=/path/ca.pem in the URL)"
        return BrokerUnavailable(detail, target=target, reason=f"TLS: {exc.verify_message or exc.reason}{hint}")
    if isinstance(exc, ssl.SSLError):
        return BrokerUnavailable(detail, target=target, reason=f"TLS: {exc.reason or exc} (is {settings.port} a TLS port?)")
    if isinstance(exc, pe.IncompatibleProtocolError):
        return BrokerUnavailable(detail, target=target, reason="the server broke off the AMQP handshake "
                                 "(a TLS port? then use amqps://)")
    if isinstance(exc, (pe.AMQPError, workflow.AMQPConnectorException, OSError)):
        return BrokerUnavailable(detail, target=target, reason=_reason(exc, settings))
    return None


def _closed_with(exc: BaseException, code: int) -> bool:
    from pika import exceptions as pe

    return isinstance(exc, pe.ConnectionClosedByBroker) and exc.reply_code == code


def _reason(exc: BaseException, settings: BrokerSettings) -> str:
    """What went wrong, in a few words, from pika's nested errors."""
    import socket

    from pika import exceptions as pe
    from pika.adapters.utils import connection_workflow as workflow

    cause = _innermost(exc)
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve {settings.host!r}: {cause.strerror}"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, (TimeoutError, workflow.AMQPConnectorStackTimeout, workflow.AMQPConnectionWorkflowAborted)):
        return f"no answer within {settings.connect_timeout:g}s (the connect timeout)"
    if isinstance(cause, pe.ConnectionClosedByBroker):
        return f"the broker closed the connection: {cause.reply_text} ({cause.reply_code})"
    if isinstance(cause, (pe.StreamLostError, ConnectionError)):
        return "connection lost"
    if isinstance(cause, (pe.ConnectionWrongStateError, pe.ChannelWrongStateError)):
        return "the connection is closed"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return _scrub(_first_line(str(cause)) or type(cause).__name__, settings)


def _innermost(exc: BaseException) -> BaseException:
    """pika wraps connect failures: AMQPConnectionError(AMQPConnectorSocketConnectError(ConnectionRefusedError))."""
    from pika.adapters.utils import connection_workflow as workflow

    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = None
        if isinstance(exc, workflow.AMQPConnectorPhaseErrorBase):
            inner = exc.exception
        elif isinstance(exc, workflow.AMQPConnectionWorkflowFailed) and exc.exceptions:
            inner = exc.exceptions[-1]
        elif exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if inner is None:
            return exc
        exc = inner
    return exc


def _first_line(text: str) -> str:
    return next((part.strip() for part in text.splitlines() if part.strip()), "")


def _scrub(text: str, settings: BrokerSettings) -> str:
    """The password never leaves: neither as given nor percent-encoded."""
    import urllib.parse

    secret = settings.password
    if not secret:
        return text
    for form in {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}:
        text = text.replace(form, "***")
    return text
