"""Per-component progress lines with wall times for local runs.

LocalDagRunner announces each node through absl logging ("Component X is running." /
"... is finished."); this handler turns those announcements into one line per component.
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from typing import Dict, Iterator, List, Tuple

from rich.console import Console

_RUNNING = re.compile(r"Component (\S+) is running\.")
_FINISHED = re.compile(r"Component (\S+) is finished\.")
_CACHED = re.compile(r"A cached execution \d+ is used\.")


class ComponentProgress(logging.Handler):
    """Prints `▶ name` at start and `✔ name  12.3s` (or `cached`) at the end."""

    def __init__(self, console: Console):
        super().__init__(level=logging.INFO)
        self.console = console
        self.started: Dict[str, float] = {}
        self.cached: set = set()
        self.current = None
        self.timings: List[Tuple[str, float, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if match := _RUNNING.search(message):
            self.current = match.group(1)
            self.started[self.current] = time.monotonic()
            self.console.print(f"[bold cyan]▶[/] {self.current} [dim]started[/]")
        elif _CACHED.search(message) and self.current:
            self.cached.add(self.current)
        elif match := _FINISHED.search(message):
            name = match.group(1)
            seconds = time.monotonic() - self.started.get(name, time.monotonic())
            cached = name in self.cached
            self.timings.append((name, seconds, cached))
            note = " [yellow](cached)[/]" if cached else ""
            self.console.print(f"[bold green]✔[/] {name} [dim]finished in[/] {seconds:6.1f}s{note}")


@contextlib.contextmanager
def component_progress(console: Console) -> Iterator[ComponentProgress]:
    handler = ComponentProgress(console)
    loggers = [logging.getLogger("absl")]  # TFX logs through absl
    previous = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level > logging.INFO or lg.level == logging.NOTSET:
            lg.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for lg, level in previous:
            lg.removeHandler(handler)
            lg.setLevel(level)
