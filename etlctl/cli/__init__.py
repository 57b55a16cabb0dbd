"""The ``etlctl`` command line: one lazy group, one error handler.

Commands live in small modules that are imported only when the command runs,
so ``etlctl --version`` and ``etlctl --help`` cost little more than importing
click. Each command parses its arguments, makes one call into the library
(``etlctl.actions``, ``etlctl.oncall``, ``etlctl.store``) and hands the result
to one function of ``etlctl.views``. Every expected error ends here as its
exit code and one line on stderr (written by ``etlctl.views.errors``).
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from etlctl import __version__, errors
from etlctl.cli import options
from etlctl.views import output

# name -> (module, attribute, short help). The short help is repeated here so that
# `etlctl --help` lists every command without importing any of them.
COMMANDS = {
    "status": ("etlctl.cli.status_cmds", "status", "Show all jobs, or one job's steps and phases."),
    "kinds": ("etlctl.cli.status_cmds", "kinds", "Show job kinds, their ordered steps and rules."),
    "complete": ("etlctl.cli.flow_cmds", "complete", "Mark a RUNNING job FINISHED (what the embedding worker does)."),
    "check": ("etlctl.cli.flow_cmds", "check", "Check that every step of a FINISHED job is finished."),
    "wait-and-reset": ("etlctl.cli.flow_cmds", "wait_and_reset", "Wait, check with backoff, count down, reset to READY."),
    "reset": ("etlctl.cli.flow_cmds", "reset", "Reset a FINISHED job to READY (all phases idle)."),
    "sweep": ("etlctl.cli.flow_cmds", "sweep", "One cron pass of the reset flow over every FINISHED job."),
    "step": ("etlctl.cli.flow_cmds", "step", "Set one phase of one step (a worker's status update)."),
    "schedule-next": ("etlctl.cli.schedule_cmds", "schedule_next", "Start the due job of each idle integration."),
    "queue": ("etlctl.cli.schedule_cmds", "queue", "List, claim and finish queued extraction messages."),
    "relay": ("etlctl.cli.relay_cmd", "relay", "Publish the queued messages to RabbitMQ, with confirms."),
    "run": ("etlctl.cli.run_cmd", "run", "Sweep, schedule-next and relay as one service, at each deadline."),
    "cron": ("etlctl.cli.schedule_cmds", "cron", "Print or install the crontab for schedule-next and sweep."),
    "doctor": ("etlctl.cli.oncall_cmds", "doctor", "Find stuck, blocked and doubled jobs, with the fix for each."),
    "why": ("etlctl.cli.oncall_cmds", "why", "Explain in plain words what a job waits for."),
    "history": ("etlctl.cli.oncall_cmds", "history", "Show a job's audited state changes."),
    "watch": ("etlctl.cli.oncall_cmds", "watch", "Print job status changes as they happen."),
    "metrics": ("etlctl.cli.oncall_cmds", "metrics", "Print Prometheus metrics about jobs and the queue."),
    "db": ("etlctl.cli.db_cmds", "db", "Create or upgrade the schema; stop the embedded server."),
    "demo": ("etlctl.cli.demo_cmd", "demo", "Run the whole lifecycle on the embedded server."),
    "completion": ("etlctl.cli.completion", "completion_command", "Print the shell completion script (bash, zsh, fish)."),
}


class EtlctlGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            return None

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            # click suggests among the commands it holds, and a lazy group holds none: suggest among ours.
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=list(COMMANDS), ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        # Ctrl-C and SIGTERM, once the command has unwound, become etlctl's errors: click would print an
        # empty line before our message for a KeyboardInterrupt (psycopg has already seen it and cancelled
        # the running query).
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise errors.Interrupted() from None
        except TerminateSignal:
            raise errors.Terminated() from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run the CLI; expected errors become one stderr line and an exit code."""
        # One Invocation per run (tests run many in one process): click's ctx.obj, and the handler keeps it too.
        invocation = options.Invocation()
        # Every line of the run, whoever writes it, obeys -q and --log-timestamps (set while parsing).
        with output.installed(invocation):
            code = run(lambda: super(EtlctlGroup, self).main(
                args=args, prog_name=prog_name or "etlctl", complete_var=complete_var, standalone_mode=False,
                obj=invocation, **extra,
            ), invocation)
        if standalone_mode:
            sys.exit(code)
        return code


class TerminateSignal(BaseException):
    """SIGTERM, raised where the process is so that open work unwinds, as KeyboardInterrupt is for
    SIGINT: a BaseException, so that no `except Exception` on the way swallows it. Reported as
    errors.Terminated."""


def _on_sigterm(signum, frame):
    raise TerminateSignal()


def _while_running(unwind, previous):
    """The signal handler while a command runs. While a statement is in flight it unwinds the command
    (``unwind`` raises KeyboardInterrupt or TerminateSignal): psycopg cancels the statement, the open
    transaction rolls back, and the error handler says so. Anywhere else (importing, parsing, computing,
    printing, waiting) it leaves the way etlctl/__main__.py's handler does, at once: nothing is half done
    between two statements (each write is one statement, and a transaction left open rolls back), and an
    exception raised there may land where Python swallows it (a callback of the import machinery) and lose
    the Ctrl-C. In a test runner (no such handler) it always unwinds."""

    def handler(signum, frame):
        # (Looked up, not imported: a signal may come while that module is still being imported.)
        running = getattr(sys.modules.get("etlctl.store.connection"), "statement_running", lambda: False)
        if not callable(previous) or previous is signal.default_int_handler or running():
            unwind(signum, frame)
        previous(signum, frame)

    return handler


def run(invoke, invocation: options.Invocation) -> int:
    # While the command runs, Ctrl-C and SIGTERM cancel a statement in flight (see _while_running). Before and
    # after (etlctl/__main__.py), or in a test runner, the handlers that were there are put back.
    previous = {}
    for signum, unwind in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, _on_sigterm)):
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue  # ignored by whoever started us (a background job of a script): it stays so
        try:
            previous[signum] = signal.signal(signum, _while_running(unwind, signal.getsignal(signum)))
        except ValueError:
            pass  # not the main thread (a test runner): keep the handlers as they are
    try:
        result = invoke()
        sys.stdout.flush()  # a reader gone, or a full disk, is found here rather than after the exit code
        return result if isinstance(result, int) else 0
    except output.ReaderLeft:
        return invocation.decided_exit  # `etlctl status | head -1`: the reader left, that is not an error
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        _views().help_page(exc.ctx.get_help())
        return errors.OK
    except click.UsageError as exc:
        _views().usage_error(exc.format_message(), exc.ctx.command_path if exc.ctx else None)
        return errors.USAGE
    except click.ClickException as exc:
        _views().error(f"error: {exc.format_message()}")
        return exc.exit_code
    except errors.EtlctlError as exc:
        return _report(exc, invocation)
    except (KeyboardInterrupt, click.Abort):  # Ctrl-C outside the command (while parsing, say)
        return _report(errors.Interrupted(), invocation)
    except TerminateSignal:
        return _report(errors.Terminated(), invocation)
    except BrokenPipeError:
        return errors.OK  # `etlctl status | head`: the reader left, that is not an error
    except Exception as exc:  # the last line of defence: one line, traceback only with -v
        stopped = _signal_behind(exc)
        if stopped is not None:
            return _report(stopped, invocation)
        _views().unexpected(exc, invocation.verbose)
        return errors.UNEXPECTED
    finally:
        for signum, handler in previous.items():
            try:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            except ValueError:
                pass


def _signal_behind(exc: BaseException) -> errors.EtlctlError | None:
    """Interrupted or Terminated when a signal is what raised ``exc``: Python wraps an exception raised
    while a class is being created ("Error calling __set_name__"), and a Ctrl-C may land there while a
    command imports a module."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return errors.Interrupted()
        if isinstance(exc, TerminateSignal):
            return errors.Terminated()
        exc = exc.__cause__ or exc.__context__
    return None


def _report(exc: errors.EtlctlError, invocation: options.Invocation) -> int:
    _views().error(exc.message, exc.detail if invocation.verbose else None)
    return exc.exit_code


def _views():
    from etlctl.views import errors as shown  # only once there is an error to show: --version stays cheap

    return shown


@click.group("etlctl", cls=EtlctlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="etlctl", message="%(prog)s %(version)s")
@options.connection_options
def cli() -> None:
    """Manage the ETL job lifecycle in PostgreSQL from the command line:
    complete, check, wait-and-reset, reset, sweep and schedule jobs, and find
    out why one is stuck.

    Without --dsn, ETLCTL_DSN or PGHOST/PGDATABASE/PGSERVICE, etlctl uses the
    embedded PostgreSQL server in ETLCTL_HOME if one exists, and otherwise
    exits 6. Only `etlctl db init`, `etlctl demo` and --dsn embedded create it;
    `etlctl db stop` stops it.

    \b
    Example:
      etlctl db init && etlctl status
    """


def main(argv: list[str] | None = None) -> int:
    return cli.main(args=argv, prog_name="etlctl", standalone_mode=False)
