"""How the bench measures: each command a fresh process, run side by side with its
baseline (interleaved), and the figures it reports. Also where things are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
HOME = WORK / "home"
BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
ETLCTL = str(BIN / "etlctl")


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETLCTL_", "PG"))}
    env["ETLCTL_HOME"] = str(HOME)
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def run_timed(argv, env, expect=(0,)) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode not in expect:
        raise SystemExit(f"bench: {' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed


def interleaved(commands: dict, reps: int, warmup: int = 3) -> dict[str, list[float]]:
    """Run each command once per round, rotating the order each round; seconds per command."""
    names = list(commands)
    out = {name: [] for name in names}
    for round_ in range(warmup + reps):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            argv, env = commands[name]
            elapsed = run_timed(argv, env)
            if round_ >= warmup:
                out[name].append(elapsed)
    return out


@dataclass
class Stat:
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def q(self, p: float) -> float:
        s = sorted(self.samples)
        if len(s) == 1:
            return s[0]
        pos = p * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    def spread(self, unit: float = 1000.0, digits: int = 1) -> str:
        return f"IQR {self.q(0.25) * unit:.{digits}f}–{self.q(0.75) * unit:.{digits}f}, min {min(self.samples) * unit:.{digits}f}"


@dataclass
class Figure:
    section: str
    name: str
    value: str
    spread: str
    baseline: str
    ratio: float | None
    target: str = ""
    met: bool | None = None
    note: str = ""

    def ratio_text(self) -> str:
        return "" if self.ratio is None else f"{self.ratio:.2f}x"

    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "**missed**")


@dataclass
class Report:
    args: argparse.Namespace
    started: float = field(default_factory=time.time)
    figures: list[Figure] = field(default_factory=list)
    sections: dict[str, list[str]] = field(default_factory=dict)  # extra markdown per section
    machine: dict = field(default_factory=dict)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        print(f"  {figure.name}: {figure.value} ({figure.spread}); baseline {figure.baseline}; "
              f"ratio {figure.ratio_text()} {figure.target} {figure.verdict()}", flush=True)

    def text(self, section: str, *lines: str) -> None:
        self.sections.setdefault(section, []).extend(lines)


def ms(stat: Stat) -> str:
    return f"{stat.median * 1000:.1f} ms"


def paired_ratio_spread(a: list[float], b: list[float]) -> str:
    ratios = Stat([x / y for x, y in zip(a, b)])
    return f"paired ratios IQR {ratios.q(0.25):.2f}–{ratios.q(0.75):.2f}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
