"""Commands etlctl prints for a person or a script to run (doctor's fixes, why's hints): each argument
quoted for a POSIX shell, so that a step name or a token from a document is data, never code:
``etlctl doctor --json | jq -r '.findings[].fix[0].command' | sh`` runs exactly the arguments shown."""

from __future__ import annotations

import shlex

# Inside double quotes a POSIX shell still expands these (and bash's history expansion reads `!`).
_LIVE_IN_DOUBLE_QUOTES = set('$`\\"!')


def quote(arg: object) -> str:
    """One argument as a shell reads it back unchanged: bare when it is plain, else in single quotes,
    else (it holds single quotes) in double quotes when nothing there is live, else as shlex quotes it."""
    text = str(arg)
    quoted = shlex.quote(text)
    if quoted == text or "'" not in text:
        return quoted
    if not _LIVE_IN_DOUBLE_QUOTES & set(text):
        return f'"{text}"'  # readable SQL: psql -c "... WHERE (status ->> 'overall') = 'RUNNING'"
    return quoted


def command(*args: object) -> str:
    """The command line of these arguments, each quoted (see :func:`quote`)."""
    return " ".join(quote(arg) for arg in args)


def aimed(argv: tuple[str, ...], conninfo: str | None) -> tuple[str, ...]:
    """A printed command aimed at one database, so that it reaches it from any shell, whatever
    ETLCTL_DSN or PG* say there: etlctl gets ``--dsn CONNINFO`` (a global option, before the
    command), psql its conninfo argument. Any other command, one that names its database
    already, or no conninfo: unchanged."""
    if not conninfo or not argv:
        return tuple(argv)
    if argv[0] == "etlctl" and "--dsn" not in argv:
        return ("etlctl", "--dsn", conninfo, *argv[1:])
    if argv[0] == "psql":
        return ("psql", conninfo, *argv[1:])
    return tuple(argv)
