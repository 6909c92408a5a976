"""The triggered local run, inside the child process LocalRunner (trigger.py) starts: what
`hyperrec run --experiment E --data D --workdir W [--set ...] [--metadata M]` does, through
pipeline/runners (local.run), with the output in the request's log file.

Exit status as `hyperrec run`'s: 0 done, 2 a data root that is not the contract's layout,
1 any other failure (its one-line reason is the log's last line, which the trigger reports).
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Dict

from hyperrec.pipeline import quiet


def _log_to(path: str) -> None:
    """The child's stdout and stderr (Python's and the C++ loggers') into the run's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _exit(code: int, message: str = "") -> None:
    if message:
        print(f"error: {message}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skips TensorFlow's interpreter teardown (noise only: everything is on disk and in MLMD).
    os._exit(code)


def run_in_child(request: Dict[str, Any]) -> None:
    """The multiprocessing target: one local pipeline run for the trigger's RunRequest
    (its fields as a dict, so the child needs nothing pickled from the parent's modules)."""
    _log_to(request["log_path"])
    quiet.native_logs()
    from rich.console import Console
    from hyperrec.components.example_gen.layout import data_root_problem
    problem = data_root_problem(request["data_root"])
    if problem:
        _exit(2, problem)
    quiet.python_logs()
    from hyperrec.pipeline.runners import commands as runner_commands
    from hyperrec.pipeline.runners import local as local_runner
    console = Console(width=120)
    console.print(f"retraining run for span {request['span']} (MLMD execution "
                  f"{request['execution_id']}): {request['reason']}", markup=False)
    try:
        config, record = runner_commands.run_config(
            request["experiment"], list(request["overrides"]), request["data_root"])
        runner_commands.print_run_config(record, console)
        runner_commands.store_run_config(record, request["workdir"])
        paths = local_runner.run(config, request["data_root"], request["workdir"], console,
                                 metadata=request["metadata"])
    except Exception as err:  # noqa: BLE001 (any failure: its reason is the log's last line)
        traceback.print_exc()
        _exit(1, f"{type(err).__name__}: {err}")
    console.print(f"serving base path: {paths.serving_dir}", markup=False)
    _exit(0)
