"""What every `hyperrec` command module shares: quiet logs (set before TensorFlow loads), the
console, the experiment choice and a clean exit."""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from hyperrec.pipeline import quiet  # also TF_USE_LEGACY_KERAS, before TensorFlow loads

# `hyperrec --verbose ...` keeps TensorFlow's and the libraries' own log lines.
VERBOSE = "--verbose" in sys.argv[1:2]
if not VERBOSE:
    quiet.native_logs()

import click  # noqa: E402
from rich.console import Console  # noqa: E402

from hyperrec.components import config as config_lib  # noqa: E402

if not VERBOSE:
    quiet.python_logs()

EXPERIMENTS = click.Choice(sorted(config_lib.EXPERIMENTS))
HELP = {"help_option_names": ["-h", "--help"]}

# Tables stay readable when the output is a log file or a CI console, not a terminal.
console = Console(width=None if sys.stdout.isatty() else 120)


def exit_now(code: int) -> None:
    """Ends a process that ran TensorFlow in-process without TF's teardown noise.

    Functions traced by the Trainer are collected during interpreter shutdown, after the
    modules they need are gone, and each prints "Exception ignored in AtomicFunction.__del__".
    Everything the run produced is already on disk (artifacts, MLMD), so skip that teardown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fail(message: str, code: int = 1) -> None:
    """One line on stderr and a non-zero exit: what went wrong, not a traceback."""
    click.echo(f"error: {message}", err=True)
    exit_now(code)


def usage_errors(function: Callable) -> Callable:
    """A command's UsageProblem (pipeline/runners/commands.py: a bad --set, an MLMD location
    that names no store) as click's usage error: exit 2, one line naming the flag."""
    from hyperrec.pipeline.runners.commands import UsageProblem

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UsageProblem as err:
            if err.param_hint:
                raise click.BadParameter(str(err), param_hint=err.param_hint) from err
            raise click.UsageError(str(err)) from err
    return wrapped
