"""How `etlctl metrics` prints: Prometheus text exposition format (version 0.0.4),
on stdout or, with --textfile, atomically into a file for node_exporter."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import TextIO

from etlctl.errors import EtlctlError


def show(families, textfile: str | None) -> None:
    if textfile:
        write_textfile(textfile, lambda out: write(families, out))
    else:
        write(families, sys.stdout)


def write(families: Iterable, out: TextIO) -> None:
    """Each family's header, then its samples, one line at a time (a streamed family stays streamed)."""
    for fam in families:
        out.write(_header(fam))
        for labels, value in fam.samples:
            out.write(_sample(fam.name, labels, value))


def _header(fam) -> str:
    return f"# HELP {fam.name} {_escape_help(fam.help)}\n# TYPE {fam.name} {fam.type}\n"


def _sample(name: str, labels: dict, value: float) -> str:
    text = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
    return f"{name}{{{text}}} {_number(value)}\n" if text else f"{name} {_number(value)}\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def write_textfile(path: str, produce: Callable[[TextIO], None]) -> None:
    """Write what ``produce`` writes, atomically: node_exporter never reads a half-written file."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    fd, temporary = None, None
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = None
            produce(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # node_exporter usually runs as another user
        os.replace(temporary, target)
        temporary = None
    except OSError as exc:
        raise EtlctlError(message=f"cannot write --textfile {path}: {exc.strerror or exc}") from None
    finally:
        if fd is not None:
            os.close(fd)
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
