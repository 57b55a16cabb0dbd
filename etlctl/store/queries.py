"""Named SQL queries, loaded by name from the ``.sql`` files under ``sql/queries``.

A file holds blocks that each start with a ``-- name: <name>`` line; the
comment lines after it describe the query. Parameters use psycopg's
``%(name)s`` style. A line ``-- include: <name>`` stands for the whole text of
another block, so that queries reading the same columns share one definition
(``job_row``). No SQL lives in Python code.
"""

from __future__ import annotations

import functools
from importlib import resources

_MARKER = "-- name:"
_INCLUDE = "-- include:"


def get(name: str) -> str:
    try:
        return _all()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries") from None


def names() -> list[str]:
    return sorted(_all())


def parse(text: str, origin: str = "<sql>") -> dict[str, str]:
    """Split a file into its named blocks."""
    blocks: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(_MARKER):
            if name:
                blocks[name] = _finish(lines)
            name = line[len(_MARKER):].strip()
            if not name or name in blocks:
                raise ValueError(f"{origin}: empty or repeated query name {name!r}")
            lines = []
        elif name:
            lines.append(line)
    if name:
        blocks[name] = _finish(lines)
    return blocks


@functools.cache
def _all() -> dict[str, str]:
    found: dict[str, str] = {}
    folder = resources.files("etlctl.sql") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, sql in parse(entry.read_text(encoding="utf-8"), entry.name).items():
                if name in found:
                    raise ValueError(f"{entry.name}: query {name!r} is defined twice")
                found[name] = sql
    return {name: expand(name, found) for name in found}


def expand(name: str, blocks: dict[str, str], seen: tuple[str, ...] = ()) -> str:
    """A block's text with its `-- include:` lines replaced by the blocks they name."""
    if name in seen:
        raise ValueError(f"query {name!r} includes itself: {' -> '.join(seen + (name,))}")
    lines = []
    for line in blocks[name].splitlines():
        if line.strip().startswith(_INCLUDE):
            included = line.strip()[len(_INCLUDE):].strip()
            if included not in blocks:
                raise ValueError(f"query {name!r} includes {included!r}, which does not exist")
            lines.append(expand(included, blocks, seen + (name,)))
        else:
            lines.append(line)
    return "\n".join(lines)


def _finish(lines: list[str]) -> str:
    return "\n".join(lines).strip().rstrip(";").strip()
