"""A status document as etlctl reads it: bounded, and never a crash.

Other programs write the documents, and one of them may be hostile: nested a
thousand levels deep (Python's JSON reader then raises RecursionError), ten
megabytes long, or holding numbers Python cannot hold (``1e400`` is infinity
as a float; an integer of more than 4,300 digits is refused). Reading such a
document must affect only its own job.

- PostgreSQL decides what Python reads (``etlctl.readable_status``, in
  ``sql/schema.sql``): a document at most :data:`MAX_BYTES` long and nested at
  most :data:`MAX_DEPTH` levels is read whole; otherwise part by part (each
  key, each step, each key of a step), leaving out each part nested too deep,
  or, in a document over :data:`MAX_BYTES`, longer than :data:`MAX_PART_BYTES`.
  It lists what it left out, and :func:`place` marks those parts
  :class:`Unreadable` where they were, so that nothing else is lost.
- :func:`loads`, psycopg's JSON loader on every etlctl connection, never
  raises: a number Python cannot hold becomes a :class:`BigNumber`, and a
  value it cannot read at all (anything but a job row, which PostgreSQL has
  bounded already) an :class:`Unreadable`.

Pure: no database here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Keep these three in step with etlctl.readable_status (sql/schema.sql); a test compares them.
MAX_DEPTH = 64  # levels of nesting, the document itself being the first
MAX_BYTES = 1024 * 1024  # a longer document is read part by part...
MAX_PART_BYTES = 64 * 1024  # ...and a part longer than this is left out
# Python refuses to turn more than 4,300 digits into an int (CVE-2020-10735); stay clear of it.
MAX_INT_DIGITS = 4000


@dataclass(frozen=True)
class Unreadable:
    """A part of a status document (or all of it) that etlctl did not read, and why."""

    reason: str

    def __str__(self) -> str:
        return f"<not read: {self.reason}>"


@dataclass(frozen=True)
class BigNumber:
    """A JSON number Python cannot hold: too large for a float, or too many digits for an int."""

    text: str

    def __str__(self) -> str:
        return self.text if len(self.text) <= 40 else f"{self.text[:20]}…({len(self.text)} digits)"


@dataclass(frozen=True)
class Part:
    """A part of a document that was left out: where (keys from the top), and why."""

    path: tuple[str, ...]
    reason: str

    @property
    def where(self) -> str:
        return path_text(self.path)


def path_text(path: Sequence[str]) -> str:
    """'steps.jira_dev_status.meta'; a key that is not a plain word is quoted as JSON ('ui."a b"')."""
    if not path:
        return "the whole document"
    return ".".join(key if key.isidentifier() and key.isascii() else json.dumps(key) for key in path)


def _int(text: str) -> int | BigNumber:
    return BigNumber(text) if len(text) > MAX_INT_DIGITS else int(text)


def _float(text: str) -> float | BigNumber:
    value = float(text)
    return value if math.isfinite(value) else BigNumber(text)


def loads(data: str | bytes | bytearray | memoryview) -> object:
    """JSON text as Python values; never raises (see the module's docstring)."""
    if isinstance(data, memoryview):
        data = bytes(data)
    try:
        return json.loads(data, parse_int=_int, parse_float=_float)
    except RecursionError:
        return Unreadable(f"nested too deep for Python ({len(data):,} bytes)")
    except ValueError as exc:
        return Unreadable(f"not JSON Python can read ({exc})")


def part_reason(row: Mapping) -> str:
    """Why etlctl.readable_status left a part out, from its row {"path", "bytes", "deep"}."""
    if row.get("deep"):
        return f"nested more than {MAX_DEPTH} levels deep"
    return f"{size(int(row.get('bytes') or 0))} long, in a document over {size(MAX_BYTES)}"


def size(n: int) -> str:
    """'812 bytes', '64 KB', '10.2 MB'."""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def parts_from(rows: Sequence[Mapping] | None) -> tuple[Part, ...]:
    """The parts etlctl.readable_status left out (its `unread` column)."""
    out = []
    for row in rows or ():
        if isinstance(row, Mapping) and isinstance(row.get("path"), list):
            out.append(Part(tuple(str(key) for key in row["path"]), part_reason(row)))
    return tuple(out)


def place(status: object, parts: Sequence[Part]) -> object:
    """The document with each part left out marked :class:`Unreadable` where it was."""
    for part in parts:
        if not part.path:
            return Unreadable(part.reason)
        holder = status
        for key in part.path[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict):
            holder[part.path[-1]] = Unreadable(part.reason)
    return status


def plain(value: object) -> bool:
    """A JSON scalar that survives the trip to PostgreSQL and back unchanged (a guard may compare it)."""
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return abs(value) < 2**53  # a JSON number both sides read exactly
    return False
