"""Shell completion: `etlctl completion bash|zsh|fish` prints click's script; JOB and
--tenant values come from the database when one is configured.

Completion runs on every Tab, so it must be quick and harmless: it uses only a
database that is configured (--dsn, ETLCTL_DSN, PG*) or an embedded server that
is already running (never creating or starting one), with short timeouts, and
swallows every error and message: a Tab never prints a traceback, never hangs
for long, and never changes anything. The options that complete from the
database (cli.options) call :func:`candidates` with their command line's settings.
"""

from __future__ import annotations

import click
from collections.abc import Callable

from click.shell_completion import CompletionItem

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_ETLCTL_COMPLETE"
CONNECT_TIMEOUT = 2  # seconds: libpq's own minimum
STATEMENT_TIMEOUT = 1.0


def candidates(settings: Callable[[], object], what: str, incomplete: str, tenant: str | None = None) -> list[CompletionItem]:
    """Values of ``what`` ("jobs": ids and names, of ``tenant`` when given; "tenants": names and ids)
    that start with ``incomplete``, from the database ``settings()`` names; [] whatever goes wrong."""
    import contextlib
    import io

    try:
        # Nothing may reach the terminal in the middle of a command line being typed.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            quick = _quick(settings())
            if quick is None:
                return []
            from etlctl.oncall import status as reading
            from etlctl.store import connection

            with connection.connect(quick, "completion") as session:
                rows = reading.completions(session, what, incomplete, tenant)
        return [CompletionItem(row["value"], help=row["help"]) for row in rows]
    except BaseException:  # noqa: BLE001 - a Tab must never fail, whatever went wrong (Ctrl-C included)
        return []


def _quick(settings):
    """The command line's connection settings with short timeouts; None when the only database
    would be an embedded server that does not exist or is not running."""
    import dataclasses

    from etlctl.store import settings as config

    dsn = config.configured_dsn(settings.dsn)
    if (dsn is None and not config.libpq_environment()) or (dsn is not None and dsn.strip() == config.EMBEDDED):
        from etlctl.store import embedded

        if embedded.running(settings.home) is None:
            return None
    return dataclasses.replace(settings, connect_timeout=CONNECT_TIMEOUT, statement_timeout=STATEMENT_TIMEOUT,
                               lock_timeout=STATEMENT_TIMEOUT)


def script(root: click.Command, shell: str) -> str:
    """click's completion script for ``shell``, for the program named etlctl."""
    from click.shell_completion import get_completion_class

    return get_completion_class(shell)(root, {}, "etlctl", COMPLETE_VAR).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion_command(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish: commands,
    options, and JOB and --tenant values from the database (when one is
    configured, or the embedded server is running).

    \b
    Example:
      eval "$(etlctl completion bash)"     # in ~/.bashrc
      eval "$(etlctl completion zsh)"      # in ~/.zshrc
      etlctl completion fish > ~/.config/fish/completions/etlctl.fish
    """
    from etlctl.views import render

    render.write(script(click.get_current_context().find_root().command, shell))
