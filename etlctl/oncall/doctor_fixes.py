"""What doctor proposes to run for a finding: an etlctl command, or, where etlctl
has no command for it, psql with the named fix statements of ``sql/queries/oncall.sql``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fix:
    command: str
    note: str = ""


def psql(*names: str, **ids: int) -> str:
    """A fix to run by hand: the named statements of sql/queries/oncall.sql with ids filled in."""
    from etlctl.store import queries

    sql = "; ".join(queries.get(name) % {k: int(v) for k, v in ids.items()} for name in names)
    return f'psql -c "{sql}"'
