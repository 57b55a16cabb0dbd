"""How an error reaches the person: one line on stderr, `etlctl: <what happened>`;
with -v, the server's full message, or the traceback of an error etlctl did not expect."""

from __future__ import annotations

import traceback

from etlctl.views import output, render


def usage_error(message: str, command_path: str | None) -> None:
    hint = f" (see `{command_path} --help`)" if command_path else ""
    error(f"error: {message}{hint}")


def error(message: str, detail: str | None = None) -> None:
    """The error line (kept by -q, which silences everything else), and with -v the detail."""
    output.error(f"etlctl: {message}\n")
    if detail and detail != message:
        output.error(f"etlctl: detail: {detail}\n")


def unexpected(exc: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
    error(f"unexpected error: {type(exc).__name__}: {exc} (run with -v for the traceback)")


def help_page(text: str) -> None:
    """`etlctl` (or `etlctl db`) alone: the help, as asked."""
    render.line(text)
