"""The few ways etlctl writes: tables, JSON, lines of text, notes.

Every other view builds its text and writes it through these. Data goes to
stdout; progress and notes go to stderr. Times are shown in the zone they came
from, which is the configured database zone.

Text is shown, never obeyed: every line, table cell and note passes through
:func:`visible`, so that an escape sequence in a document (a title change, a
clear screen, a line that pretends to be another) reaches the terminal as
``\x1b]0;...`` rather than as a command to it. JSON is written as it is (its
encoder escapes control characters itself).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta

from etlctl.core import document
from etlctl.core.humanize import infinity_text, when


def _default(value: object):
    from decimal import Decimal  # here, not at the top: the error path (views/errors) must import little

    if isinstance(value, document.BigNumber):
        return value.text  # a number Python cannot hold: its digits, as text
    if isinstance(value, document.Unreadable):
        return str(value)  # a part etlctl did not read: "<not read: nested more than 64 levels deep>"
    if isinstance(value, datetime) and value.year in (1, 9999):
        return infinity_text(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


# C0 and C1 control characters (a line break included: a value must not start a line of its own), and
# the invisible characters that reorder or break what a terminal shows (bidirectional overrides and
# isolates, the marks, the line and paragraph separators).
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str) -> str:
    """``text`` with each control or invisible formatting character written out as an escape
    (``\x1b``, ``\n``, ``\u202e``): what reaches a terminal can be read, and does nothing."""
    return _INVISIBLE.sub(_escape, text)


def to_json(data: object, indent: int | None = 2) -> str:
    return json.dumps(data, default=_default, indent=indent, ensure_ascii=False)


def emit_json(data: object, indent: int | None = 2) -> None:
    sys.stdout.write(to_json(data, indent) + "\n")
    sys.stdout.flush()


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """tabulate's "simple" format; cells are text as they are (no number parsing)."""
    import tabulate  # imported here: --help, --version and JSON output never pay for it

    cells = [[_cell(c) for c in row] for row in rows]
    return tabulate.tabulate(cells, headers=list(headers), tablefmt="simple", disable_numparse=True)


def emit_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    write(table(rows, headers) + "\n")  # each cell is visible() already; the line breaks are the table's


def note(message: str) -> None:
    """A message for the person at the terminal (stderr), on one line; -q silences it."""
    sys.stderr.write(f"{visible(message)}\n")
    sys.stderr.flush()


def reason(message: str) -> None:
    """The one line (stderr) that says why the command exits non-zero, where that is no error raised
    (nothing to claim: 3; a migration refused: 4): -q keeps it, as it keeps errors."""
    from etlctl.views import output

    output.error(f"{visible(message)}\n")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return when(value)
    return visible(str(value))


def when_text(value: datetime | None) -> str:
    """A time as a table cell shows it."""
    return _cell(value)


def truncate(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def write(text: str) -> None:
    """Text on stdout exactly as given: etlctl's own (a crontab block, a help page, a table of visible() cells)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def line(text: str) -> None:
    """One line of data on stdout, flushed (so that it keeps its place among the notes on stderr)."""
    sys.stdout.write(visible(text) + "\n")
    sys.stdout.flush()


def lines(items: Iterable[str]) -> None:
    """Lines of data on stdout, each one line whatever its values hold."""
    for item in items:
        sys.stdout.write(visible(item) + "\n")
    sys.stdout.flush()
