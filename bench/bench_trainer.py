"""Where a training step's time goes, and how close it runs to this machine's matmul peak.

Generates sample data, runs the real ExampleGen and Transform (LocalDagRunner, as
bench_input_pipeline.py does), builds the Trainer's model (trainer/build.py), and then
times, on the same cached batches and in one process:

- input:   the Trainer's real input pipeline (raw tf.Example -> TFT layer), batches/s;
- PNG decode + image encoder, text encoder, the whole item tower, the query tower: forward
  passes, each its own tf.function;
- loss:    compute_loss (both towers, every task) forward;
- step:    train_step (forward, backward, optimizer); backward + optimizer = step - loss.

FLOPs per example come from TensorFlow's profiler over the traced train step's graph (the
ops with registered FLOP counts and known shapes: MatMul, Conv2D, ...; a lower bound); the peak is a bare float32 tf.matmul
loop measured in the same run. Fraction of peak = achieved FLOP/s of the step / peak.
The largest share of the step is printed as the biggest loss.

    .venv/bin/python bench/bench_trainer.py                      # tiny data and model
    .venv/bin/python bench/bench_trainer.py --scale default --experiment default --steps 40
"""
import json
import os
import sys
import tempfile
import time
from typing import Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hyperrec.pipeline import quiet  # noqa: E402  (Keras env, quiet logs before TensorFlow)

quiet.native_logs()

import click  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench_input_pipeline import data_and_model_options, trainer_inputs  # noqa: E402
from hyperrec.components import config as config_lib  # noqa: E402
from hyperrec.components.trainer.build import build_model  # noqa: E402
from hyperrec.components.trainer.input import build_dataset  # noqa: E402
from hyperrec.components.model.image_encoder import decode_png_batch  # noqa: E402
from hyperrec.schemas import features  # noqa: E402

quiet.python_logs()


def seconds_per_call(function: Callable[[Dict[str, tf.Tensor]], object], batches, repeats: int
                     ) -> float:
    """Median seconds of one call over `batches` (after one untimed call that traces)."""
    function(batches[0])
    times = []
    for _ in range(repeats):
        for batch in batches:
            start = time.perf_counter()
            result = function(batch)
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_peak_flops(size: int = 1024, calls: int = 20) -> float:
    """FLOP/s of a bare float32 size x size matmul chain on this machine (the reference)."""
    a = tf.random.normal([size, size], seed=1)
    b = tf.random.normal([size, size], seed=2)

    @tf.function
    def chain(x: tf.Tensor) -> tf.Tensor:
        for _ in range(4):
            x = tf.matmul(x, b) * 1e-3
        return x

    chain(a).numpy()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        chain(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 4 * 2 * size ** 3 / best


def graph_flops(concrete_function) -> float:
    """The profiler's float-op count of a traced function's graph (ops without a registered
    FLOP count, e.g. PNG decoding, count 0)."""
    from tensorflow.python.profiler import model_analyzer, option_builder
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(model_analyzer.profile(graph=concrete_function.graph,
                                        options=options).total_float_ops)


@click.command()
@data_and_model_options
@click.option("--steps", default=20, show_default=True, help="cached batches timed")
@click.option("--repeats", default=2, show_default=True, help="passes over the batches")
def main(scale: str, experiment: str, steps: int, repeats: int) -> None:
    console = Console(width=120)
    config = config_lib.load(experiment)
    tf.keras.utils.set_random_seed(config.model.seed)
    batch_size = config.model.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        tft_output, accessor, train_files, content = trainer_inputs(config, scale, tmp)
        dataset = build_dataset(train_files, accessor, tft_output, batch_size,
                                        shuffle=True, seed=config.model.seed, num_epochs=None)
        iterator = iter(dataset)
        next(iterator)  # opening the files and tracing the TFT layer are not per-batch costs
        start = time.perf_counter()
        batches = [next(iterator) for _ in range(steps)]
        input_s = (time.perf_counter() - start) / steps
        model = build_model(config.model, config.data, config.transform, tft_output,
                                    10_000, content)
        model(batches[0])  # builds every layer
        item, query = model.item_tower, model.query_tower

        @tf.function(reduce_retracing=True)
        def image(batch):
            pixels, mask = decode_png_batch(batch[features.IMAGE_XF], item.image_size)
            return item.image_encoder((pixels, mask))

        @tf.function(reduce_retracing=True)
        def text(batch):
            return item.text_encoder(batch[features.TITLE_TOKENS_XF], training=True)

        parts = {
            "PNG decode + image encoder (forward)": image,
            "text encoder (forward)": text,
            "item tower (forward)": tf.function(lambda b: item.encode(b, training=True),
                                                reduce_retracing=True),
            "query tower (forward)": tf.function(lambda b: query.encode(b, training=True),
                                                 reduce_retracing=True),
            "loss (both towers, every task, forward)": tf.function(
                lambda b: model.compute_loss(b, training=True), reduce_retracing=True),
        }
        step_function = tf.function(model.train_step, reduce_retracing=True)
        timings = {name: seconds_per_call(fn, batches, repeats) for name, fn in parts.items()}
        step_s = seconds_per_call(step_function, batches, repeats)
        flops = graph_flops(step_function.get_concrete_function(batches[0]))
        peak = matmul_peak_flops()
    loss_s = timings["loss (both towers, every task, forward)"]
    timings["backward + optimizer (step - loss)"] = max(step_s - loss_s, 0.0)
    achieved = flops / step_s
    table = Table(title=f"One training step, '{experiment}' model on '{scale}' data "
                        f"(batch {batch_size}, {os.cpu_count()} cores, median of "
                        f"{steps * repeats} calls)")
    for column in ("part", "ms / batch", "share of the step"):
        table.add_column(column)
    table.add_row("input pipeline (read + TFT layer, not overlapped)", f"{1e3 * input_s:.1f}",
                  f"{input_s / step_s:.2f}")
    for name, seconds in timings.items():
        table.add_row(name, f"{1e3 * seconds:.1f}", f"{seconds / step_s:.2f}")
    table.add_row("[bold]train step[/]", f"{1e3 * step_s:.1f}", "1.00")
    console.print(table)
    parts_only = {k: v for k, v in timings.items() if not k.startswith("item tower")
                  and not k.startswith("loss")}
    biggest = max(parts_only, key=parts_only.get)
    console.print(
        f"examples/s {batch_size / step_s:.0f}; FLOPs/example {flops / batch_size / 1e6:.2f} M "
        f"(profiler, train step graph); matmul peak {peak / 1e9:.1f} GFLOP/s; "
        f"step reaches {achieved / 1e9:.2f} GFLOP/s = [bold]{achieved / peak:.3f}[/] of peak")
    console.print(f"biggest part of the step: {biggest} ({parts_only[biggest] / step_s:.0%}); "
                  f"the input pipeline alone would allow {batch_size / input_s:.0f} examples/s "
                  f"(fit overlaps it with the step through prefetch)")
    print(json.dumps({"examples_per_s": round(batch_size / step_s, 1),
                      "flops_per_example": round(flops / batch_size),
                      "peak_gflops": round(peak / 1e9, 2),
                      "fraction_of_peak": round(achieved / peak, 4),
                      "input_ms": round(1e3 * input_s, 2),
                      **{k: round(1e3 * v, 2) for k, v in timings.items()},
                      "step_ms": round(1e3 * step_s, 2)}))


if __name__ == "__main__":
    main()
