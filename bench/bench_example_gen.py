"""ExampleGen scaling: the same executor over a window of K and 2K spans, side by side.

Generates the `default` sample data once, then runs the real ExampleGen component (TFX
LocalDagRunner, Beam DirectRunner) over the latest span with a rolling window of half the
spans and of all spans, in each DirectRunner mode asked for, and prints rows/s and the time
ratio normalised to exactly doubled data (target: <= 2.2x).

    .venv/bin/python bench/bench_example_gen.py [--scale default] [--modes multi_processing,in_memory]
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hyperrec.pipeline import quiet  # noqa: E402  (Keras env, quiet logs before TensorFlow)

quiet.native_logs()

import click  # noqa: E402
from ml_metadata.metadata_store import metadata_store  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.orchestration import metadata  # noqa: E402

from hyperrec.data import synthetic as datagen  # noqa: E402
from hyperrec.components import config as config_lib  # noqa: E402
from hyperrec.pipeline import pipeline as pipeline_def  # noqa: E402

quiet.python_logs()


def run_example_gen(data_root: str, workdir: str, window_spans: int, mode: str):
    """One uncached ExampleGen run; returns (seconds, interaction rows read)."""
    config = config_lib.load("default", [f"data.window_spans={window_spans}"])
    component = pipeline_def.example_gen_component(config, data_root)
    workers = os.cpu_count() or 1
    db = os.path.join(workdir, "metadata.sqlite")
    bench_pipeline = tfx.dsl.Pipeline(
        pipeline_name="bench-example-gen", pipeline_root=os.path.join(workdir, "root"),
        components=[component], enable_cache=False,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
        beam_pipeline_args=[f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"])
    start = time.monotonic()
    tfx.orchestration.LocalDagRunner().run(bench_pipeline)
    seconds = time.monotonic() - start
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    newest = max(store.get_artifacts_by_type("Examples"), key=lambda a: a.id)
    return seconds, newest.custom_properties["interaction_read"].int_value


@click.command()
@click.option("--scale", default="default", show_default=True)
@click.option("--modes", default="multi_processing,in_memory", show_default=True)
def main(scale: str, modes: str) -> None:
    console = Console(width=120)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = os.path.join(tmp, "data")
        summary = datagen.generate(scale, 42, data_root)
        n_spans = summary["n_spans"]
        half = n_spans // 2
        table = Table(title=f"ExampleGen on '{scale}' sample data ({os.cpu_count()} cores)")
        for column in ("mode", "spans", "rows", "seconds", "rows/s", "time ratio",
                       "time ratio per 2x rows"):
            table.add_column(column, justify="right")
        for mode in modes.split(","):
            small = run_example_gen(data_root, os.path.join(tmp, f"{mode}-s"), half, mode)
            large = run_example_gen(data_root, os.path.join(tmp, f"{mode}-l"), n_spans, mode)
            time_ratio = large[0] / small[0]
            rows_ratio = large[1] / small[1]
            # Normalised to exactly doubled data, assuming linear cost in rows.
            per_doubling = time_ratio * 2.0 / rows_ratio
            for spans, (seconds, rows) in ((half, small), (n_spans, large)):
                table.add_row(mode, str(spans), f"{rows:,}", f"{seconds:.1f}",
                              f"{rows / seconds:,.0f}",
                              f"{time_ratio:.2f}" if spans == n_spans else "",
                              f"{per_doubling:.2f} (target <= 2.2)" if spans == n_spans else "")
        console.print(table)


if __name__ == "__main__":
    main()
