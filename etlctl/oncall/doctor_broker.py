"""doctor's judgments about the message broker, when one is configured: it cannot
be reached (or refuses etlctl), a queue the outbox targets does not exist, or no
worker consumes one. Pure: what was read in (by :mod:`etlctl.oncall.doctor`),
findings out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from etlctl.errors import BrokerRefused, EtlctlError
from etlctl.oncall.doctor_fixes import Fix
from etlctl.oncall.doctor_report import NOTE, PROBLEM, Finding


def _messages(n: int) -> str:
    return f"{n} message{'s' if n != 1 else ''}"


def _wait(n: int) -> str:
    return f"{_messages(n)} wait{'s' if n == 1 else ''}"


def unreachable_finding(shown: str, error: EtlctlError, pending: int) -> Finding:
    """The broker cannot be reached, or refused etlctl's login or vhost (the error says which)."""
    waiting = f"; {_wait(pending)} in the outbox" if pending else ""
    if isinstance(error, BrokerRefused):
        cause = ("the broker refuses etlctl's user or vhost: check the user and vhost in ETLCTL_AMQP_URL (or "
                 "RABBITMQ_USER and RABBITMQ_VHOST), the password (ETLCTL_AMQP_PASSWORD_FILE), and the user's "
                 "permissions on the vhost")
        fixes = (Fix(("rabbitmqctl", "list_user_permissions", "USER"), "on the broker's host: configure, write and read "
                                                               "on the vhost (etlctl declares and publishes)"),)
    else:
        cause = "RabbitMQ is down, or unreachable from this host, or the URL names the wrong host or port"
        fixes = (Fix(("rabbitmq-diagnostics", "-q", "ping"), "on the broker's host: is RabbitMQ running?"),
                 Fix(("etlctl", "relay"), "once it is back: publishes what waits (schedule-next does it for its own)"))
    return Finding("broker_unreachable", PROBLEM, f"{error.message}{waiting}", cause, fixes,
                   details={"broker": shown, "pending": pending})


def queue_findings(shown: str, targets: Sequence[Mapping], seen: Mapping[str, object]) -> list[Finding]:
    """Each target queue (oncall_target_queues' rows) against what the broker said of it: a QueueInfo,
    or None when it does not exist."""
    out = []
    for target in targets:
        name, pending = target["queue_name"], target["pending"]
        info = seen.get(name)
        if info is None:
            goes = (f"{_wait(pending)} to be published there" if pending
                    else "the next run of a tenant of that tier sends its first message there")
            out.append(Finding(
                "queue_missing", PROBLEM, f"queue {name} does not exist on {shown}: {goes}",
                "no worker of that tier declared it (the existing deployment declares only the premium queues), "
                "or it was deleted: a message published there would come back unroutable",
                (Fix(("etlctl", "relay"), "declares it (durable, x-message-ttl 24 h, as the workers do) and publishes "
                                              "what waits; a worker must consume it too"),),
                details={"queue": name, "pending": pending}))
        elif info.consumers == 0:
            ready = info.messages
            out.append(Finding(
                "queue_no_consumer", PROBLEM if ready else NOTE,
                f"no worker consumes {name}" + (f": {_messages(ready)} ready there" if ready else " (it is empty)"),
                "the workers of that queue are stopped, or none is deployed for that tier",
                (Fix(("rabbitmqctl", "list_consumers", "-p", "VHOST"), "on the broker's host: who consumes what"),),
                details={"queue": name, "messages": ready, "consumers": 0}))
    return out
