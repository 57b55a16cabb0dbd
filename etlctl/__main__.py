"""`python -m etlctl`, and the `etlctl` console script (setup.cfg points it at :func:`main`).

Ctrl-C and SIGTERM exit 130 and 143 with one quiet line from the first line of
this module on, whatever is running: Python's own handler would raise
KeyboardInterrupt wherever the interpreter happens to be (importing click,
parsing, flushing the output at exit) and print a traceback. Nothing is open
outside a command, so the handler here simply says so and exits; while a
command runs, :func:`etlctl.cli.run` lets Ctrl-C unwind it instead (psycopg
cancels the statement, the transaction rolls back).

Before this module runs, the interpreter itself is starting (about 10 ms; 20
with an editable install, whose import hook loads pathlib): a Ctrl-C then is
Python's own, which prints a traceback, unless the launcher held it blocked
(see :func:`quiet_signals`).
"""

import _signal  # the interpreter's own, loaded already: `signal` (its enum wrapper) takes milliseconds to import

# A signal the launcher ignores stays ignored (a background job of a script ignores Ctrl-C, as Python does).
_HANDLED = tuple(sig for sig in (_signal.SIGINT, _signal.SIGTERM) if _signal.getsignal(sig) != _signal.SIG_IGN)
# Until errors.py (whose docstrings are the messages) is imported, a signal is only noted: see quiet_signals.
_noted: list[int] = []
for _sig in _HANDLED:
    _signal.signal(_sig, lambda signum, frame: _noted.append(signum))

import os  # noqa: E402 - after the handlers, on purpose
import sys  # noqa: E402

from etlctl import errors  # noqa: E402


def _exit_at_once(signum, frame):
    stopped = errors.Interrupted() if signum == _signal.SIGINT else errors.Terminated()
    # Whatever the command already printed stays printed (a reader must not lose it), then one line, then out.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(2, f"etlctl: {stopped.message}\n".encode())
    os._exit(stopped.exit_code)


def quiet_signals() -> None:
    """Ctrl-C and SIGTERM end the process with their exit code and one line, wherever it is.

    A launcher may hold them blocked while the interpreter starts (a blocked signal stays pending
    across exec, and Python leaves the mask alone): unblocking them here delivers such a signal to
    this handler, so that a Ctrl-C before etlctl's first line is etlctl's too."""
    for sig in _HANDLED:
        _signal.signal(sig, _exit_at_once)
    if _noted:  # one came while this module was being imported
        _exit_at_once(_noted[0], None)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, set(_HANDLED))


def main() -> None:
    quiet_signals()
    from etlctl.cli import TerminateSignal, main as cli_main  # after the handlers: importing click takes a while

    try:
        code = cli_main()
    except KeyboardInterrupt:  # a second Ctrl-C while the first one was being reported
        _exit_at_once(_signal.SIGINT, None)
    except TerminateSignal:
        _exit_at_once(_signal.SIGTERM, None)
    # Flushed here, under the quiet handler, rather than by the interpreter's exit, where a Ctrl-C is nobody's.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `etlctl status | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    # Leave now, everything being written and every connection closed: the interpreter's own exit puts
    # Python's default handlers back first (a Ctrl-C then kills the process, exit -2), and CPython 3.11
    # remembers a KeyboardInterrupt that passed through code run by exec() of a string (dataclasses build
    # their methods so) and kills itself with SIGINT at exit, whatever the exit status.
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
