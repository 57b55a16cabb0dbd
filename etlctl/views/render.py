"""Rendering: tables, JSON, durations and the reset countdown.

Data goes to stdout; progress and notes go to stderr. Times are shown in the
zone they came from, which is the configured database zone.
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
    cells = [[_cell(c) for c in row] for row in rows]
    headers = list(headers)
    if _plain(cells, headers):
        return _simple_table(cells, headers)
    import tabulate  # only tables with multi-line, wide or control characters pay for it

    return tabulate.tabulate(cells, headers=headers, tablefmt="simple", disable_numparse=True)


def _plain(cells: list[list[str]], headers: list[str]) -> bool:
    """Single-line printable ASCII only: there, _simple_table is exactly tabulate's "simple" format."""
    width = len(headers)
    return all(h.isascii() and h.isprintable() and h == h.strip() for h in headers) and all(
        len(row) == width and all(c.isascii() and c.isprintable() for c in row) for row in cells)


def _simple_table(cells: list[list[str]], headers: list[str]) -> str:
    # tabulate's "simple" format, without importing it (a few ms on every `check` and `status`):
    # cells stripped and left-aligned, columns at least two wider than their header, two
    # spaces between columns, a dashed line under the header, no trailing spaces.
    cells = [[c.strip() for c in row] for row in cells]
    widths = [max([len(h) + 2] + [len(row[n]) for row in cells]) for n, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def emit_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    sys.stdout.write(table(rows, headers) + "\n")


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


def truncate(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def lines(items: Iterable[str]) -> None:
    for item in items:
        sys.stdout.write(item + "\n")


class Countdown:
    """"Job completed. Resetting in 30 seconds..." until a deadline.

    Live (rewritten each second) on a terminal; otherwise one plain line
    every 10 seconds, which reads well in a log file.
    """

    def __init__(self, sleep, stream=None) -> None:
        self.sleep = sleep  # the clock seam's sleep: tests move frozen time instead of waiting
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def run(self, seconds: float) -> None:
        remaining = max(0.0, seconds)
        step = 1.0 if self.live else 10.0
        while remaining > 0:
            self._show(remaining)
            pause = min(step, remaining) if self.live else (remaining % step or step)
            self.sleep(pause)
            remaining -= pause
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.flush()

    def _show(self, remaining: float) -> None:
        whole = int(-(-remaining // 1))  # ceil: never show "0 seconds" while waiting
        text = f"Job completed. Resetting in {whole} second{'s' if whole != 1 else ''}..."
        if self.live:
            self.stream.write(f"\r\033[K{text}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
