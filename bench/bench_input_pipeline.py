"""Input pipeline overhead: training on the real input pipeline vs the same batches in memory.

Generates sample data, runs the real ExampleGen and Transform components (LocalDagRunner),
then trains the two-tower model twice for the same steps, side by side in one process:

- real: raw tf.Examples read by the Trainer's data accessor, the TFT layer applied in
  `Dataset.map` (trainer.build_dataset, exactly what run_fn trains on);
- cached: the very same transformed batches, computed once and cached in memory.

Throughput is examples/s over the timed epochs (the first epoch, which traces the step
function, is not timed). The ratio real / cached says how much of the training time the
input pipeline costs (target: >= 0.9, i.e. the input pipeline hides behind the model).

    .venv/bin/python bench/bench_input_pipeline.py [--scale tiny] [--steps 60] [--epochs 4]
"""
import dataclasses
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hyperrec.pipeline import quiet  # noqa: E402  (Keras env, quiet logs before TensorFlow)

quiet.native_logs()

import click  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from ml_metadata.metadata_store import metadata_store  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.components.util import tfxio_utils  # noqa: E402
from tfx.orchestration import metadata  # noqa: E402
from tfx.proto import transform_pb2  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402

from hyperrec.data import synthetic as datagen  # noqa: E402
from hyperrec.schemas import features  # noqa: E402
from hyperrec.components import trainer  # noqa: E402
from hyperrec.components import config as config_lib  # noqa: E402
from hyperrec.pipeline import pipeline as pipeline_def  # noqa: E402

quiet.python_logs()


def run_ingest_and_transform(config: config_lib.HyperrecConfig, data_root: str,
                             workdir: str, reuse: bool = False, transform: bool = True):
    """ExampleGen -> ImportSchemaGen -> Transform, as the pipeline wires them; returns the
    Examples artifact (as the Trainer receives it) and the TransformGraph's uri (None with
    transform=False: ExampleGen alone). `reuse` returns those of an earlier run in `workdir`
    when it has them (benches that train many variants on one data set, e.g.
    bench_ablations.py run in several processes)."""
    db = os.path.join(workdir, "metadata.sqlite")
    # What the outputs depend on: a reuse with other data or settings (history length,
    # vocabulary, ...) would train on examples that do not match the config.
    inputs = {"data_root": data_root, "data": dataclasses.asdict(config.data),
              "transform": dataclasses.asdict(config.transform)}
    inputs_file = os.path.join(workdir, "ingest_inputs.json")
    if reuse and os.path.exists(db):
        store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
        if store.get_artifacts_by_type("TransformGraph" if transform else "Examples"):
            if not os.path.exists(inputs_file):
                raise SystemExit(f"--reuse: {workdir} does not say what it was ingested with "
                                 f"(no {inputs_file}); use another workdir")
            with open(inputs_file) as f:
                earlier = json.load(f)
            if earlier != json.loads(json.dumps(inputs)):
                changed = sorted(key for key in inputs if inputs[key] != earlier.get(key))
                raise SystemExit(f"--reuse: {workdir} was ingested with other {changed} "
                                 f"({inputs_file}); use another workdir")
            print(f"reusing the ingestion of {workdir}", flush=True)
            return _latest_outputs(store, transform)
    os.makedirs(workdir, exist_ok=True)
    with open(inputs_file, "w") as f:
        json.dump(inputs, f, indent=1, sort_keys=True)
    components = [pipeline_def.example_gen_component(config, data_root)]
    if transform:
        schema_gen = tfx.components.ImportSchemaGen(
            schema_file=os.path.join(config_lib.project_root(), config.schema_file))
        components += [schema_gen, tfx.components.Transform(
            examples=components[0].outputs["examples"], schema=schema_gen.outputs["schema"],
            preprocessing_fn=pipeline_def.PREPROCESSING_FN,
            splits_config=transform_pb2.SplitsConfig(analyze=[features.TRAIN_SPLIT]),
            materialize=False,
            custom_config={**dataclasses.asdict(config.transform),
                           "data": dataclasses.asdict(config.data)})]
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="bench-input-pipeline", pipeline_root=os.path.join(workdir, "root"),
        components=components, enable_cache=False,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
    return _latest_outputs(
        metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db)), transform)


def _latest_outputs(store: metadata_store.MetadataStore, transform: bool):
    examples = standard_artifacts.Examples()
    examples.uri = store.get_artifacts_by_type("Examples")[-1].uri
    examples.split_names = json.dumps([features.TRAIN_SPLIT, features.EVAL_SPLIT,
                                       features.CATALOG_SPLIT])
    return examples, (store.get_artifacts_by_type("TransformGraph")[-1].uri if transform
                      else None)


class EpochTimer(tf.keras.callbacks.Callback):
    """Wall time of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def train_throughput(dataset: tf.data.Dataset, config: config_lib.HyperrecConfig,
                     tft_output: tft.TFTransformOutput, content, steps: int,
                     epochs: int) -> float:
    """Examples/s of `fit` over epochs 2..epochs (epoch 1 traces and is not timed)."""
    tf.keras.utils.set_random_seed(config.model.seed)
    model = trainer.build_model(config.model, config.data, config.transform, tft_output,
                                steps * epochs, content)
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    timed = timer.seconds[1:]
    return steps * (epochs - 1) * config.model.batch_size / sum(timed)


@click.command()
@click.option("--scale", default="tiny", show_default=True, help="sample-data scale")
@click.option("--experiment", default="tiny", show_default=True, help="model config")
@click.option("--steps", default=60, show_default=True, help="train steps per epoch")
@click.option("--epochs", default=4, show_default=True, help="epochs (the first is untimed)")
def main(scale: str, experiment: str, steps: int, epochs: int) -> None:
    console = Console(width=120)
    config = config_lib.load(experiment)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = os.path.join(tmp, "data")
        datagen.generate(scale, 42, data_root)
        examples, transform_graph = run_ingest_and_transform(config, data_root, tmp)
        tft_output = tft.TFTransformOutput(transform_graph)
        data_accessor = tfx.components.DataAccessor(
            tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
            record_batch_factory=tfxio_utils.get_record_batch_factory_from_artifact(
                [examples], []),
            data_view_decode_fn=None)
        train_files = [os.path.join(examples.uri, f"Split-{features.TRAIN_SPLIT}", "*")]
        content = trainer.catalog_content(
            trainer.build_catalog_batches(trainer.catalog_file_patterns(train_files),
                                          data_accessor, tft_output),
            tft_output, config.transform, config.data)

        def real_dataset() -> tf.data.Dataset:
            return trainer.build_dataset(train_files, data_accessor, tft_output,
                                         config.model.batch_size, shuffle=True,
                                         seed=config.model.seed, num_epochs=None)

        # The same batches, transformed once and held in memory (filled before timing).
        cached = real_dataset().take(steps).cache()
        for _ in cached:
            pass
        cached = cached.repeat().prefetch(tf.data.AUTOTUNE)

        results = {"real": train_throughput(real_dataset(), config, tft_output, content,
                                            steps, epochs),
                   "cached": train_throughput(cached, config, tft_output, content, steps,
                                              epochs)}
    ratio = results["real"] / results["cached"]
    table = Table(title=f"Training throughput, '{experiment}' model on '{scale}' data "
                        f"({os.cpu_count()} cores, batch {config.model.batch_size}, "
                        f"{steps} steps x {epochs - 1} timed epochs)")
    for column in ("input", "examples/s"):
        table.add_column(column)
    table.add_row("real pipeline (raw tf.Example -> TFT layer in tf.data)",
                  f"{results['real']:.0f}")
    table.add_row("same batches cached in memory", f"{results['cached']:.0f}")
    console.print(table)
    verdict = "[green]meets[/]" if ratio >= 0.9 else "[red]misses[/]"
    console.print(f"ratio real / cached = [bold]{ratio:.3f}[/] ({verdict} the target >= 0.9)")
    print(json.dumps({"real_examples_per_s": round(results["real"], 1),
                      "cached_examples_per_s": round(results["cached"], 1),
                      "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
