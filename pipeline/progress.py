"""Per-component progress lines with wall times for local runs.

LocalDagRunner runs one node after the other through `Launcher.launch`; while a run is in
progress this module wraps that method to print `▶ name` when a component starts and
`✔ name  12.3s` (or `(cached)` when MLMD already had its outputs) when it ends. Wrapping the
launcher, rather than parsing log lines, keeps working whatever a component does to logging.

Two of TFX's log records are said by the progress line instead: a node whose required input
has no artifact yet (DistributionValidator on a first run: no previous span to compare) is
logged as an "Input resolution error" with a traceback, and is shown here as skipped with
the input it waits for; and a warning about ArtifactQuery.property_predicate that TFX logs for
every filtered channel, whatever the channel holds.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from typing import Dict, Iterator, List

from rich.console import Console
from tfx.orchestration.portable import launcher as launcher_lib


@dataclasses.dataclass
class ComponentTiming:
    name: str
    seconds: float
    cached: bool
    failed: bool = False
    skipped: str = ""  # why the node did not run (an input with no artifact yet)


@dataclasses.dataclass
class ComponentProgress:
    console: Console
    timings: List[ComponentTiming] = dataclasses.field(default_factory=list)

    def print_summary(self) -> None:
        total = sum(t.seconds for t in self.timings)
        self.console.print(f"[dim]{len(self.timings)} components, {total:.1f}s in components[/]")


_EMPTY_INPUT = re.compile(r"^\[([\w.-]+)\] Input resolution error: .* "
                          r"inputs\[(\w+)\] has min_count = \d+ but only got 0 artifacts")
_CHANNEL_FILTER_NOTICE = "ArtifactQuery.property_predicate is not supported."


class _EmptyInputRecords(logging.Filter):
    """Takes TFX's empty-input records off the log and remembers them per node."""

    def __init__(self) -> None:
        super().__init__()
        self.empty_inputs: Dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == _CHANNEL_FILTER_NOTICE:
            return False
        match = _EMPTY_INPUT.match(message)
        if match:
            self.empty_inputs[match.group(1)] = match.group(2)
            return False
        return True


@contextlib.contextmanager
def component_progress(console: Console) -> Iterator[ComponentProgress]:
    progress = ComponentProgress(console)
    empty_inputs = _EmptyInputRecords()
    absl_logger = logging.getLogger("absl")
    original_launch = launcher_lib.Launcher.launch
    original_prepare = launcher_lib.Launcher._prepare_execution  # pylint: disable=protected-access

    def prepare(self):
        result = original_prepare(self)
        self._hyperrec_cached = not result.is_execution_needed  # pylint: disable=protected-access
        return result

    def launch(self):
        name = self._pipeline_node.node_info.id  # pylint: disable=protected-access
        console.print(f"[bold cyan]▶[/] {name} [dim]started[/]")
        start = time.monotonic()
        try:
            result = original_launch(self)
        except BaseException:
            seconds = time.monotonic() - start
            progress.timings.append(ComponentTiming(name, seconds, False, failed=True))
            console.print(f"[bold red]✘[/] {name} [red]failed after {seconds:.1f}s[/]")
            raise
        seconds = time.monotonic() - start
        skipped = empty_inputs.empty_inputs.pop(name, "")
        cached = getattr(self, "_hyperrec_cached", False) and not skipped
        progress.timings.append(ComponentTiming(name, seconds, cached, skipped=skipped))
        note = " [yellow](cached)[/]" if cached else ""
        if skipped:
            note = f" [yellow](skipped: no {skipped} artifact yet)[/]"
        console.print(f"[bold green]✔[/] {name} [dim]finished in[/] {seconds:6.1f}s{note}")
        return result

    launcher_lib.Launcher.launch = launch
    launcher_lib.Launcher._prepare_execution = prepare  # pylint: disable=protected-access
    absl_logger.addFilter(empty_inputs)
    try:
        yield progress
    finally:
        absl_logger.removeFilter(empty_inputs)
        launcher_lib.Launcher.launch = original_launch
        launcher_lib.Launcher._prepare_execution = original_prepare  # pylint: disable=protected-access
