"""The few ways etlctl writes: tables, JSON, lines of text, notes.

Every other view builds its text and writes it through these. Data goes to
stdout; progress and notes go to stderr. Times are shown in the zone they came
from, which is the configured database zone.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal

from etlctl.core.humanize import infinity_text, when


def _default(value: object):
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
    line(table(rows, headers))


def note(message: str) -> None:
    """A message for the person at the terminal (stderr)."""
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return when(value)
    return str(value)


def when_text(value: datetime | None) -> str:
    """A time as a table cell shows it."""
    return _cell(value)


def truncate(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def write(text: str) -> None:
    """Text on stdout exactly as given (a file's content, such as a crontab block)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def line(text: str) -> None:
    """One line of data on stdout, flushed (so that it keeps its place among the notes on stderr)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def lines(items: Iterable[str]) -> None:
    for item in items:
        sys.stdout.write(item + "\n")
    sys.stdout.flush()
