"""What doctor proposes to run for a finding: an etlctl command, or, where etlctl
has no command for it, psql with the named fix statements of ``sql/queries/`` (``oncall.sql``,
``replication.sql``).

A fix is its arguments, never a line of text with values pasted in: its command line quotes
each of them (:func:`etlctl.core.shell.command`), however hostile a step name or token is."""

from __future__ import annotations

from dataclasses import dataclass

from etlctl.core import shell


@dataclass(frozen=True)
class Fix:
    argv: tuple[str, ...]
    note: str = ""
    # A pattern for a person to fill in (`--dsn DSN`, `host=PRIMARY,STANDBY`): shown, but never a command a
    # script runs (JSON gives it as "template", its "command" empty), since run as printed it fails.
    template: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.argv, str):  # a whole line would become one argument per character
            raise TypeError(f"Fix takes its arguments as a tuple, not the line {self.argv!r}")
        object.__setattr__(self, "argv", tuple(str(arg) for arg in self.argv))

    def aimed(self, conninfo: str | None) -> Fix:
        """The same fix, reaching the database of ``conninfo`` from any shell (:func:`shell.aimed`)."""
        return Fix(shell.aimed(self.argv, conninfo), self.note, self.template)

    @property
    def command(self) -> str:
        """The command line, each argument quoted for sh."""
        return shell.command(*self.argv)


def psql(*names: str, **ids: int) -> tuple[str, ...]:
    """A fix to run by hand: psql with the named statements of sql/queries/oncall.sql, ids filled in."""
    from etlctl.store import queries

    return ("psql", "-c", "; ".join(queries.get(name) % {k: int(v) for k, v in ids.items()} for name in names))


def psql_each(*names: str) -> tuple[str, ...]:
    """psql with one -c per named statement: each its own transaction (ALTER SYSTEM refuses to run in one)."""
    from etlctl.store import queries

    return ("psql", *(part for name in names for part in ("-c", queries.get(name))))
