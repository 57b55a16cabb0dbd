"""The crontab block for schedule-next and sweep, and installing it idempotently."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from etlctl.errors import EtlctlError, UsageError
from etlctl.store import target
from etlctl.store.reach import dsn_without_password

BEGIN = "# BEGIN etlctl"
END = "# END etlctl"


@dataclass(frozen=True)
class Crontab:
    block: str
    every: str
    password_left_out: bool  # the DSN had a password, which the block never carries
    installed: bool
    broker_password_left_out: bool = False  # cron's etlctl would lack the broker's password (no password file)


def crontab(settings, every: str, log_path: str | None = None, *, install_it: bool = False,
            broker=None) -> Crontab:
    """`etlctl cron`: the block for the database (and the broker, if any) this command selected;
    with ``install_it``, written into the user's crontab (replacing an earlier etlctl block)."""
    from etlctl.broker.settings import password_left_out

    log = log_path or str(Path(settings.home) / "cron.log")
    text = block(every, settings, log, broker=broker)
    left_out = bool(settings.dsn) and dsn_without_password(settings.dsn)[1]
    if install_it:
        install(text, log)
    return Crontab(text, every, left_out, install_it, password_left_out(broker))


# Only intervals that divide the hour (the day): cron's */7 restarts at each hour, so "every 7m"
# would tick at :56 and again at :00, four minutes apart.
EVERY_MINUTES = tuple(n for n in range(1, 60) if 60 % n == 0)
EVERY_HOURS = tuple(n for n in range(1, 24) if 24 % n == 0)


def schedule(every: str) -> str:
    """The five cron fields for an interval that divides the hour (1m..30m) or the day (1h..12h)."""
    match = re.fullmatch(r"\s*(\d+)\s*(m|h)\s*", every or "")
    if match:
        n, unit = int(match.group(1)), match.group(2)
        if unit == "m" and n in EVERY_MINUTES:
            return "* * * * *" if n == 1 else f"*/{n} * * * *"
        if unit == "h" and n in EVERY_HOURS:
            return "0 * * * *" if n == 1 else f"0 */{n} * * *"
    raise UsageError(message=f"invalid --every {every!r}: expected an interval cron repeats evenly: "
                             f"{', '.join(f'{n}m' for n in EVERY_MINUTES)}, or {', '.join(f'{n}h' for n in EVERY_HOURS)}")


# What libpq reads to choose and reach the server, every host of a multi-host PGHOST=a,b included; never
# PGPASSWORD (nor PGSSLKEY's passphrase, which libpq takes from no variable).
PG_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE", "PGSERVICEFILE", "PGSSLMODE",
                "PGPASSFILE", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY",
                "PGSSLCRL")
CARRIED = ("ETLCTL_DELAY", "ETLCTL_BACKOFF", "ETLCTL_COOLDOWN")


def environment(settings, environ=None, broker=None) -> tuple[list[tuple[str, str]], list[str]]:
    """What each command line of the block sets, as (name, value) pairs, and the comments that
    explain it. The database is selected the way this very command selected it; then the
    settings that differ from the defaults; then timestamps for the log. This is the one place
    to add a variable the ticks need (the broker's, say): one more pair."""
    from etlctl.store import settings as config

    environ = os.environ if environ is None else environ
    pairs: list[tuple[str, str]] = []
    notes: list[str] = []
    if settings.dsn and settings.dsn.strip() != config.EMBEDDED:  # embedded: ETLCTL_HOME below, attach only
        dsn, _ = dsn_without_password(settings.dsn)
        notes.append("# A password is never written here: keep it in ~/.pgpass (or PGPASSFILE).")
        params = target.parse_dsn(dsn)
        notes += _several_hosts(params.get("host"), params.get("target_session_attrs"),
                                "add target_session_attrs=read-write to the DSN")
        pairs.append(("ETLCTL_DSN", dsn))
    elif not settings.dsn and config.libpq_environment(environ):
        notes.append("# The database of libpq's PG* variables; PGPASSWORD is never written here: use ~/.pgpass.")
        notes += _several_hosts(environ.get("PGHOST"), environ.get("PGTARGETSESSIONATTRS"),
                                "set PGTARGETSESSIONATTRS=read-write")
        pairs += [(name, environ[name]) for name in PG_VARIABLES if environ.get(name)]
    else:
        notes.append("# No DSN given: the embedded server in ETLCTL_HOME (set ETLCTL_DSN for another).")
        pairs.append(("ETLCTL_HOME", str(settings.home)))
    if settings.db_timezone != config.DEFAULT_DB_TIMEZONE:
        pairs.append(("ETLCTL_DB_TIMEZONE", settings.db_timezone))
    pairs += [(name, environ[name]) for name in CARRIED if environ.get(name)]
    for name, default in (("statement_timeout", config.DEFAULT_STATEMENT_TIMEOUT),
                          ("lock_timeout", config.DEFAULT_LOCK_TIMEOUT),
                          ("idle_timeout", config.DEFAULT_IDLE_TIMEOUT),
                          ("connect_timeout", config.DEFAULT_CONNECT_TIMEOUT)):
        value = getattr(settings, name)
        if value != default:
            pairs.append((f"ETLCTL_{name.upper()}", f"{value:g}"))
    if broker is not None:
        from etlctl.broker.settings import cron_environment

        notes.append("# The broker's password is never written here: keep it in ETLCTL_AMQP_PASSWORD_FILE.")
        pairs += cron_environment(broker, environ)
    pairs.append(("ETLCTL_LOG_TIMESTAMPS", "1"))  # every line of the log says when
    return pairs, notes


def _several_hosts(hosts: str | None, attrs: str | None, fix: str) -> list[str]:
    """A comment for a multi-host database: each tick connects to the host that accepts writes, or,
    without target_session_attrs=read-write, may reach a standby and be refused."""
    if not hosts or "," not in hosts:
        return []
    if attrs in ("read-write", "primary"):
        return [f"# Several hosts: each tick connects to the one that accepts writes (target_session_attrs={attrs})."]
    return [f"# Several hosts, but a tick may reach a standby first and be refused (exit 6): {fix}."]


def executable() -> list[str]:
    """How cron runs this very etlctl: the script next to its interpreter, else ``python -m etlctl``
    (never a search of cron's PATH, which may find another one, or none)."""
    script = Path(sys.executable).parent / "etlctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "etlctl"]


def block(every: str, settings, log_path: str, environ=None, broker=None) -> str:
    """The crontab block. A NAME=value line in a crontab applies to every line below it, the
    user's own included, so each command line carries its environment itself. Every path and
    value is quoted for sh, and each % escaped (cron would turn it into a newline)."""
    fields = schedule(every)
    pairs, notes = environment(settings, environ, broker)
    for name, value in pairs + [("--log", log_path)] + [("the etlctl path", part) for part in executable()]:
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise UsageError(message=f"{name} holds a control character (a newline?): a crontab line cannot carry it")
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in pairs)
    command = " ".join(shlex.quote(part) for part in executable())

    def line(tick: str) -> str:
        text = f"{assignments} {command} {tick} >> {shlex.quote(log_path)} 2>&1"
        return f"{fields} " + text.replace("%", "\\%")

    lines = [
        f"{BEGIN}: schedule-next and sweep every {every} (managed by `etlctl cron --install`)",
        "# Each line sets its own environment: a NAME=value line would apply to every crontab line below it.",
        *notes,
        line("schedule-next"),
        line("sweep"),
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


def install(new_block: str, log_path: str) -> None:
    binary = shutil.which("crontab")
    if binary is None:
        raise EtlctlError(message="crontab not found: install cron, or put the block `etlctl cron` prints into your scheduler")
    listed = subprocess.run([binary, "-l"], capture_output=True, text=True)
    if listed.returncode != 0 and "no crontab" not in listed.stderr.lower():
        raise EtlctlError(message=f"crontab -l failed: {listed.stderr.strip() or listed.returncode}")
    current = without_block(listed.stdout if listed.returncode == 0 else "")
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    text = (current + "\n\n" if current else "") + new_block
    written = subprocess.run([binary, "-"], input=text, capture_output=True, text=True)
    if written.returncode != 0:
        raise EtlctlError(message=f"crontab - failed: {written.stderr.strip() or written.returncode}")
