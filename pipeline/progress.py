"""Per-component progress lines with wall times for local runs.

LocalDagRunner runs one node after the other through `Launcher.launch`; while a run is in
progress this module wraps that method to print `▶ name` when a component starts and
`✔ name  12.3s` (or `(cached)` when MLMD already had its outputs) when it ends. Wrapping the
launcher, rather than parsing log lines, keeps working whatever a component does to logging.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Iterator, List

from rich.console import Console
from tfx.orchestration.portable import launcher as launcher_lib


@dataclasses.dataclass
class ComponentTiming:
    name: str
    seconds: float
    cached: bool
    failed: bool = False


@dataclasses.dataclass
class ComponentProgress:
    console: Console
    timings: List[ComponentTiming] = dataclasses.field(default_factory=list)

    def print_summary(self) -> None:
        total = sum(t.seconds for t in self.timings)
        self.console.print(f"[dim]{len(self.timings)} components, {total:.1f}s in components[/]")


@contextlib.contextmanager
def component_progress(console: Console) -> Iterator[ComponentProgress]:
    progress = ComponentProgress(console)
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
        cached = getattr(self, "_hyperrec_cached", False)
        progress.timings.append(ComponentTiming(name, seconds, cached))
        note = " [yellow](cached)[/]" if cached else ""
        console.print(f"[bold green]✔[/] {name} [dim]finished in[/] {seconds:6.1f}s{note}")
        return result

    launcher_lib.Launcher.launch = launch
    launcher_lib.Launcher._prepare_execution = prepare  # pylint: disable=protected-access
    try:
        yield progress
    finally:
        launcher_lib.Launcher.launch = original_launch
        launcher_lib.Launcher._prepare_execution = original_prepare  # pylint: disable=protected-access
