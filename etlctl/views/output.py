"""Where every line of one etlctl run goes: -q/--quiet and --log-timestamps.

For the length of one run, the CLI puts a :class:`Lines` in front of stdout and
stderr, so these settings hold for every line, whoever writes it (a view, click's
help, the one-line note about the embedded server):

- ``quiet`` (-q): no informational lines on stderr (progress, countdowns, the note about
  the embedded server, "there are more"). Lines written with :func:`error` pass: the
  error line, and the one-line reason of any other non-zero exit. Stdout is never
  silenced: it is the data the command was asked for (``etlctl -q status --json``).
- ``timestamps`` (--log-timestamps, ``ETLCTL_LOG_TIMESTAMPS=1``, which the cron
  block sets): every line starts with this host's time, ISO 8601 to the second
  with its offset, then a space. JSON output too: it is for logs, not for parsing.
  Never automatic: a pipe or a file gets the same text as a terminal.

A live line (a countdown rewritten in place) is drawn only on a terminal, and
neither with timestamps nor when quiet: see :func:`live`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol, TextIO


class Settings(Protocol):
    quiet: bool
    timestamps: bool


class _Plain:
    quiet = False
    timestamps = False


class ReaderLeft(BaseException):
    """Stdout's reader is gone (EPIPE: ``etlctl status | head -1``): not an error, as for any Unix tool.
    A BaseException, so that no ``except Exception`` on the way (nor click's handler of EPIPE, which
    exits 1) takes it: the CLI exits with the code the command had decided (doctor's 3), else 0."""


class Lines:
    """A text stream that applies one run's :class:`Settings` line by line."""

    def __init__(self, inner: TextIO, settings: Settings, quietable: bool = True) -> None:
        self.inner = inner
        self.settings = settings
        self.quietable = quietable  # stderr: -q silences it; stdout (the data) never
        self.at_line_start = True
        self.reader_left = False
        self.name = "stderr" if quietable else "stdout"

    def write(self, text: str) -> int:
        if not (self.quietable and self.settings.quiet):
            self._write(text)
        return len(text)

    def write_error(self, text: str) -> None:
        """An error line: written even when quiet."""
        self._write(text)

    def _write(self, text: str) -> None:
        if self.settings.timestamps and text:
            stamp = datetime.now().astimezone().isoformat(timespec="seconds") + " "
            pieces = text.split("\n")
            out = []
            for i, piece in enumerate(pieces):
                last = i == len(pieces) - 1
                if last and not piece:
                    break  # the text ended a line: the next write starts one
                out.append((stamp if self.at_line_start else "") + piece + ("" if last else "\n"))
                self.at_line_start = not last
            text = "".join(out)
        self._guarded(self.inner.write, text)

    def flush(self) -> None:
        self._guarded(self.inner.flush)

    def _guarded(self, write, *args) -> None:
        """A write or flush of the stream; EPIPE is :class:`ReaderLeft` (and later writes go nowhere),
        any other failure (a full disk: ENOSPC) the one-line :class:`~etlctl.errors.OutputFailed`."""
        if self.reader_left:
            return
        try:
            write(*args)
        except BrokenPipeError:
            self.reader_left = True
            raise ReaderLeft() from None
        except OSError as exc:
            from etlctl.errors import OutputFailed

            self.reader_left = True  # nothing more goes there: the error line goes to the other stream
            raise OutputFailed(stream=self.name, reason=exc.strerror or str(exc)) from None

    def isatty(self) -> bool:
        return hasattr(self.inner, "isatty") and self.inner.isatty()

    def __getattr__(self, name: str):  # encoding, fileno, ...: the stream's own
        return getattr(self.inner, name)


@contextlib.contextmanager
def installed(settings: Settings) -> Iterator[None]:
    """Put :class:`Lines` in front of stdout and stderr for one run; the streams as they were afterwards."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Lines(sys.stdout, settings, quietable=False), Lines(sys.stderr, settings)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception, ReaderLeft):
                stream.flush()
        sys.stdout, sys.stderr = saved


def error(text: str) -> None:
    """Write an error line on stderr (or the reason of a non-zero exit): the one kind of stderr line -q keeps."""
    stream = sys.stderr
    try:
        if isinstance(stream, Lines):
            stream.write_error(text)
        else:
            stream.write(text)
        stream.flush()
    except (ReaderLeft, Exception):
        pass  # stderr itself cannot take it: the exit code still says it


def settings() -> Settings:
    """This run's settings (plain when no run installed any, as in library use)."""
    stream = sys.stderr
    return stream.settings if isinstance(stream, Lines) else _Plain()


def live(stream: TextIO) -> bool:
    """Whether a line may be redrawn in place on ``stream``: a terminal, without timestamps, not quiet."""
    current = settings()
    return not current.quiet and not current.timestamps and hasattr(stream, "isatty") and stream.isatty()
