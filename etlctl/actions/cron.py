"""The crontab block for schedule-next and sweep, and installing it idempotently."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from etlctl.errors import EtlctlError, UsageError

BEGIN = "# BEGIN etlctl"
END = "# END etlctl"


@dataclass(frozen=True)
class Crontab:
    block: str
    every: str
    password_left_out: bool  # the DSN had a password, which the block never carries
    installed: bool


def crontab(settings, every: str, log_path: str | None = None, *, install_it: bool = False) -> Crontab:
    """`etlctl cron`: the block for the database this command selected; with ``install_it``,
    written into the user's crontab (replacing an earlier etlctl block)."""
    text = block(every, settings, log_path)
    left_out = bool(settings.dsn) and dsn_without_password(settings.dsn)[1]
    if install_it:
        install(text)
    return Crontab(text, every, left_out, install_it)


def schedule(every: str) -> str:
    """The five cron fields for '1m'..'59m' or '1h'..'23h'."""
    match = re.fullmatch(r"\s*(\d+)\s*(m|h)\s*", every or "")
    if match:
        n, unit = int(match.group(1)), match.group(2)
        if unit == "m" and 1 <= n <= 59:
            return "* * * * *" if n == 1 else f"*/{n} * * * *"
        if unit == "h" and 1 <= n <= 23:
            return "0 * * * *" if n == 1 else f"0 */{n} * * *"
    raise UsageError(message=f"invalid --every {every!r}: expected 1m to 59m or 1h to 23h")


SECRET_PARAMS = ("password", "sslpassword")
PG_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGSERVICEFILE", "PGSSLMODE",
                "PGPASSFILE")
CARRIED = ("ETLCTL_DELAY", "ETLCTL_BACKOFF", "ETLCTL_COOLDOWN")


def dsn_without_password(dsn: str) -> tuple[str, bool]:
    """The DSN without its secrets, and whether it had any."""
    from psycopg import conninfo

    from etlctl.store import settings as config
    from etlctl.store.connection import parse_dsn

    if dsn.strip() == config.EMBEDDED:
        return dsn, False
    params = parse_dsn(dsn)
    removed = [params.pop(name, None) for name in SECRET_PARAMS]
    had = any(removed)
    return conninfo.make_conninfo(**params), had


def block(every: str, settings, log_path: str | None = None, environ=None) -> str:
    """The crontab block; it selects the database the way this very command did."""
    from etlctl.store import settings as config

    environ = os.environ if environ is None else environ
    fields = schedule(every)
    bin_dir = Path(sys.executable).parent
    etlctl = bin_dir / "etlctl"
    command = str(etlctl) if etlctl.exists() else "etlctl"
    log = log_path or str(Path(settings.home) / "cron.log")
    lines = [
        f"{BEGIN}: schedule-next and sweep every {every} (managed by `etlctl cron --install`)",
        "SHELL=/bin/sh",
        f"PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin",
    ]
    if settings.dsn and settings.dsn.strip() != config.EMBEDDED:  # embedded: ETLCTL_HOME below, attach only
        dsn, _ = dsn_without_password(settings.dsn)
        lines.append("# A password is never written here: keep it in ~/.pgpass (or PGPASSFILE).")
        lines.append(f'ETLCTL_DSN="{dsn}"')
    elif not settings.dsn and config.libpq_environment(environ):
        lines.append("# The database of libpq's PG* variables; PGPASSWORD is never written here: use ~/.pgpass.")
        lines += [f'{name}="{environ[name]}"' for name in PG_VARIABLES if environ.get(name)]
    else:
        lines.append("# No DSN given: the embedded server in ETLCTL_HOME (set ETLCTL_DSN for another).")
        lines.append(f'ETLCTL_HOME="{settings.home}"')
    if settings.db_timezone != config.DEFAULT_DB_TIMEZONE:
        lines.append(f"ETLCTL_DB_TIMEZONE={settings.db_timezone}")
    lines += [f'{name}="{environ[name]}"' for name in CARRIED if environ.get(name)]
    for name, default in (("statement_timeout", config.DEFAULT_STATEMENT_TIMEOUT),
                          ("lock_timeout", config.DEFAULT_LOCK_TIMEOUT),
                          ("idle_timeout", config.DEFAULT_IDLE_TIMEOUT),
                          ("connect_timeout", config.DEFAULT_CONNECT_TIMEOUT)):
        value = getattr(settings, name)
        if value != default:
            lines.append(f"ETLCTL_{name.upper()}={value:g}")
    lines += [
        f"{fields} {command} schedule-next >> {log} 2>&1",
        f"{fields} {command} sweep >> {log} 2>&1",
        END,
    ]
    return "\n".join(lines) + "\n"


def without_block(crontab: str) -> str:
    """The crontab with any earlier etlctl block removed."""
    out, inside = [], False
    for line in crontab.splitlines():
        if line.startswith(BEGIN):
            inside = True
        elif inside and line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out).strip("\n")


def install(new_block: str) -> None:
    binary = shutil.which("crontab")
    if binary is None:
        raise EtlctlError(message="crontab not found: install cron, or put the block `etlctl cron` prints into your scheduler")
    listed = subprocess.run([binary, "-l"], capture_output=True, text=True)
    if listed.returncode != 0 and "no crontab" not in listed.stderr.lower():
        raise EtlctlError(message=f"crontab -l failed: {listed.stderr.strip() or listed.returncode}")
    current = without_block(listed.stdout if listed.returncode == 0 else "")
    log = re.search(r">> (.+) 2>&1$", new_block, re.MULTILINE)
    if log:
        Path(log.group(1)).parent.mkdir(parents=True, exist_ok=True)
    text = (current + "\n\n" if current else "") + new_block
    written = subprocess.run([binary, "-"], input=text, capture_output=True, text=True)
    if written.returncode != 0:
        raise EtlctlError(message=f"crontab - failed: {written.stderr.strip() or written.returncode}")
