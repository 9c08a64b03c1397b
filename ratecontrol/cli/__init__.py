"""`ratecontrol` command line: thin click commands over the library.

Only this module turns RatecontrolError into exit codes: one line on stderr, no traceback
(set RATECONTROL_DEBUG=1 to see one for an unexpected error).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback

import click

from ratecontrol.errors import RatecontrolError
from ratecontrol.cli._common import echo_json, error_message

__all__ = ["cli", "main", "run_group"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ratecontrol")
def cli() -> None:
    """Encode audio at the lowest bitrate that still meets a ViSQOL quality target."""



def _register_subcommands() -> None:
    from ratecontrol.cli.batch import batch_command
    from ratecontrol.cli.doctor import doctor
    from ratecontrol.cli.encode import encode
    from ratecontrol.cli.presets import presets
    from ratecontrol.cli.score import score

    for cmd, name in ((encode, "encode"), (score, "score"), (presets, "presets"), (doctor, "doctor"),
                      (batch_command, "batch")):
        cli.add_command(cmd, name=name)


_register_subcommands()


def main(argv: list[str] | None = None) -> None:
    """The ``ratecontrol`` command. Its process (and the batch workers it starts) runs
    with ratecontrol's allocator settings (ratecontrol._malloc: fewer page faults)."""
    from ratecontrol import _malloc

    if _malloc.tune_allocator():
        os.environ[_malloc.ENV] = "1"
    run_group(cli, argv)


def _one_line(exc) -> str:
    # a file name with a newline must not split the one line
    return str(exc).replace("\r", "\\r").replace("\n", "\\n")


def _format_warning(message, category, filename, lineno, line=None):
    from ratecontrol.errors import RatecontrolWarning

    if issubclass(category, RatecontrolWarning):
        return f"warning: {_one_line(message)}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


_default_formatwarning = None


def run_group(group: click.Group, argv: list[str] | None = None) -> None:
    """Run a click group, turning every error into one line and an exit code
    (shared by `ratecontrol` and `python -m trainer`). With --json on the command line,
    an error is also printed to stdout as one JSON object (error, message, exit_code)."""
    import warnings

    global _default_formatwarning
    if _default_formatwarning is None:
        _default_formatwarning = warnings.formatwarning
        warnings.formatwarning = _format_warning
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args

    def fail(exc: BaseException, code: int, message: str) -> None:
        if as_json:
            echo_json({"error": type(exc).__name__, "message": message, "exit_code": code})
        sys.exit(code)

    try:
        with _stop_signals_interrupt():
            group.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort as exc:
        # click turns a KeyboardInterrupt (Ctrl-C, or a stop signal below) into Abort
        cause = exc.__cause__
        signum = getattr(cause, "signum", signal.SIGINT) if isinstance(cause, KeyboardInterrupt) else None
        if signum is None:  # an EOF at a prompt, or click's own abort
            click.echo("aborted", err=True)
            fail(exc, 130, "aborted")
        text = f"interrupted by {signal.Signals(signum).name}"
        click.echo(text, err=True)
        fail(exc, 128 + signum, text)
    except click.ClickException as exc:
        exc.show()
        fail(exc, exc.exit_code, exc.format_message())
    except RatecontrolError as exc:
        click.echo(f"error: {_one_line(error_message(exc))}", err=True)
        fail(exc, exc.exit_code, error_message(exc))
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        text = f"interrupted by {signal.Signals(signum).name}"
        click.echo(text, err=True)
        fail(exc, 128 + signum, text)
    except Exception as exc:  # a bug: one line unless asked for the traceback
        if os.environ.get("RATECONTROL_DEBUG"):
            traceback.print_exc()
        click.echo(f"internal error: {type(exc).__name__}: {_one_line(exc)} (set RATECONTROL_DEBUG=1 for a traceback; "
                   "please report it)", err=True)
        fail(exc, 70, f"{type(exc).__name__}: {exc}")


class _Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) raised in the main thread, as Ctrl-C raises
    KeyboardInterrupt: the same way out, so every ``finally`` and ``atexit`` clean-up
    (temp files, this run's temp folder, batch's workers) runs. Exit 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_stopped(signum, frame):
    # a second stop signal is not caught: whoever insists gets the default (immediate) end
    signal.signal(signum, signal.SIG_DFL)
    raise _Stopped(signum)


@contextlib.contextmanager
def _stop_signals_interrupt():
    """SIGTERM and SIGHUP raise _Stopped while a command runs (their default ends the
    process at once: no clean-up). A signal someone chose to handle or ignore (nohup)
    is left alone, and the old handlers come back after (main() called in-process)."""
    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                old[sig] = signal.signal(sig, _raise_stopped)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
