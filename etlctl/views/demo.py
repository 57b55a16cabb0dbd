"""How `etlctl demo` prints its transcript: sections, and each command it ran with its output indented."""

from __future__ import annotations

from collections.abc import Sequence

from etlctl.core import shell
from etlctl.views import render


class Transcript:
    def say(self, text: str = "") -> None:
        render.line(text)

    def section(self, title: str) -> None:
        render.lines(["", f"== {title}"])

    def command(self, args: Sequence[str], output: str) -> None:
        render.lines([f"$ {shell.command('etlctl', *args)}"] + [f"  {line}" for line in output.splitlines()])
