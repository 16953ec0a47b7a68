"""How the ``solulab`` commands report bad input (one line on stderr, exit status 2) and
interruptions (what was kept, how to go on, the shell's exit status for the signal)."""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import signal
import sys
from collections.abc import Callable

import typer

from solulab.errors import SolulabError, TrainingInterrupted
from solulab.extras import missing_extra


def reports_errors(command):
    """Turn a ``SolulabError``, or an optional dependency not installed (naming the extra that
    brings it), into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SolulabError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as e:
            if (extra := missing_extra(e)) is None:
                raise
            typer.echo(f"error: {extra}", err=True)
            raise typer.Exit(2) from None

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that partial outputs are removed on the way out."""


def raise_on_sigterm(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def stops_cleanly(what_happened: str | Callable[[], str]):
    """Ctrl-C or SIGTERM during a command that writes atomically: say what was left (a text, or
    a function that tells it once stopped) and exit with the shell's code for the signal (130 or
    143)."""
    try:
        yield
    except KeyboardInterrupt as stop:
        text = what_happened if isinstance(what_happened, str) else what_happened()
        typer.echo(f"interrupted: {text}", err=True)
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        raise typer.Exit(128 + signum) from None


@contextlib.contextmanager
def reports_interruption(resume_flag: bool = True):
    """A training stopped by SIGINT or SIGTERM: say where it stopped and how to go on (the same
    command, with ``--resume`` where the command takes it), and exit with the shell's code for
    the signal."""
    again = [a for a in sys.argv if a != "--resume"] + ["--resume"] * resume_flag
    command = " ".join(shlex.quote(a) for a in again)
    try:
        yield
    except TrainingInterrupted as stop:
        if is_main_process():
            typer.echo(f"stopped at step {stop.step} of {stop.total_steps}; checkpoint "
                       f"{stop.checkpoint}\nresume with: {command}", err=True)
        raise typer.Exit(stop.exit_code) from None
    except KeyboardInterrupt:
        if is_main_process():
            typer.echo("stopped at once; every file is whole. Resume from the last checkpoint "
                       f"with: {command}", err=True)
        raise typer.Exit(128 + signal.SIGINT) from None


def is_main_process() -> bool:
    """Rank 0 under torchrun (or no torchrun): the process that speaks."""
    return os.environ.get("RANK", "0") == "0"
