"""A monitoring window's retraining decision, made and started with the runner the
configuration names (trigger.py), then written into the window's summary and report."""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence

from ml_metadata.metadata_store import metadata_store

from hyperrec.pipeline.loop import monitor as monitor_lib
from hyperrec.pipeline.loop import trigger as trigger_lib
from hyperrec.pipeline.runners import commands as runner_commands
from hyperrec.pipeline.runners import metadata as metadata_lib


def trigger_window(summary: dict, workdir: str, *, data_root: str, experiment: str,
                   overrides: Sequence[str] = (), runner: str = "", metadata: str = "",
                   announce: Optional[Callable[[str], None]] = None, **_) -> Dict:
    """Decides and starts; the decision joins the window's summary.json and report.html;
    returns it (summary["trigger"]). A bad setting raises ValueError or FileNotFoundError
    before anything is recorded."""
    overrides = list(overrides) + ([f"monitoring.runner={runner}"] if runner else [])
    config = runner_commands.load_config(experiment, overrides)
    store = metadata_store.MetadataStore(metadata_lib.connection_config(
        metadata or os.path.join(workdir, "metadata.sqlite")))
    chosen = trigger_lib.runner_for(config.monitoring, config.name)
    out = monitor_lib.window_dir(workdir, summary["window"])
    trigger_lib.run(summary, data_root=data_root, workdir=workdir, experiment=experiment,
                    overrides=overrides, store=store, runner=chosen, window_dir=out,
                    trigger_on=config.monitoring.trigger_on, metadata=metadata,
                    announce=announce)
    trigger_lib.write_to_window(out, summary)
    return summary["trigger"]


def trigger_lines(summary: dict) -> List[str]:
    """The decision's lines, when the window has one."""
    return trigger_lib.text_lines(summary["trigger"]) if "trigger" in summary else []
