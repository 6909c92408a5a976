"""Input pipeline overhead: training on the real input pipeline vs the same batches in memory.

Generates sample data, runs the real ExampleGen and Transform components (LocalDagRunner),
then trains the two-tower model twice for the same steps, side by side in one process:

- real: raw tf.Examples read by the Trainer's data accessor, the TFT layer applied in
  `Dataset.map` (trainer/input.py build_dataset, exactly what run_fn trains on);
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
from typing import Any, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hyperrec.pipeline import quiet  # noqa: E402  (Keras env, quiet logs before TensorFlow)

quiet.native_logs()

import click  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from ml_metadata.metadata_store import metadata_store  # noqa: E402
from ml_metadata.proto import metadata_store_pb2  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.components.util import tfxio_utils  # noqa: E402
from tfx.orchestration import metadata  # noqa: E402
from tfx.proto import transform_pb2  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402

from hyperrec.data import synthetic as datagen  # noqa: E402
from hyperrec.schemas import features  # noqa: E402
from hyperrec.components.trainer.build import build_model  # noqa: E402
from hyperrec.components.trainer.input import (  # noqa: E402
    build_catalog_batches, build_dataset, catalog_content, catalog_file_patterns)
from hyperrec.components import config as config_lib  # noqa: E402
from hyperrec.pipeline import pipeline as pipeline_def  # noqa: E402

quiet.python_logs()

PIPELINE_RUN_CONTEXT = "pipeline_run"  # the context type LocalDagRunner records a run as


def run_ingest_and_transform(config: config_lib.HyperrecConfig, data_root: str,
                             workdir: str, reuse: bool = False, transform: bool = True):
    """ExampleGen -> ImportSchemaGen -> Transform, as the pipeline wires them; returns the
    Examples artifact (as the Trainer receives it) and the TransformGraph's uri (None with
    transform=False: ExampleGen alone).

    `reuse` turns on TFX's execution cache in `workdir`'s metadata (benches that train many
    variants on one data set, e.g. bench_ablations.py run in several processes): a component
    whose inputs, data files (ExampleGen's span fingerprint) and settings match an earlier
    execution reuses its outputs, anything else runs again. The outputs returned are this
    run's own, cached or new.
    """
    db = os.path.join(workdir, "metadata.sqlite")
    os.makedirs(workdir, exist_ok=True)
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
    started = time.time()
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="bench-input-pipeline", pipeline_root=os.path.join(workdir, "root"),
        components=components, enable_cache=reuse,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    outputs, cached = run_outputs(store)
    reused = [name for name in ("Examples", "TransformGraph") if name in cached]
    if reused:
        print(f"reused the cached {' and '.join(reused)} of {workdir} "
              f"({time.time() - started:.0f} s)", flush=True)
    examples = standard_artifacts.Examples()
    examples.uri = outputs["Examples"].uri
    examples.split_names = json.dumps([features.TRAIN_SPLIT, features.EVAL_SPLIT,
                                       features.CATALOG_SPLIT])
    return examples, (outputs["TransformGraph"].uri if transform else None)


def run_outputs(store: metadata_store.MetadataStore) -> Tuple[Dict[str, Any], List[str]]:
    """({artifact type: artifact} output by the newest pipeline run in `store`, the types
    among them that came from TFX's cache). A cached execution is recorded in the run with
    OUTPUT events to the artifacts it reused, so both kinds are found the same way."""
    runs = store.get_contexts_by_type(PIPELINE_RUN_CONTEXT)
    if not runs:
        raise RuntimeError("no pipeline run recorded in the metadata store")
    run = max(runs, key=lambda context: (context.create_time_since_epoch, context.id))
    executions = store.get_executions_by_context(run.id)
    cached_ids = {e.id for e in executions
                  if e.last_known_state == metadata_store_pb2.Execution.CACHED}
    events = [event for event in store.get_events_by_execution_ids([e.id for e in executions])
              if event.type == metadata_store_pb2.Event.OUTPUT]
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    outputs: Dict[str, Any] = {}
    cached: List[str] = []
    for event in events:
        type_name = type_names[artifacts[event.artifact_id].type_id]
        outputs[type_name] = artifacts[event.artifact_id]
        if event.execution_id in cached_ids:
            cached.append(type_name)
    return outputs, cached


def trainer_inputs(config: config_lib.HyperrecConfig, scale: str, workdir: str
                   ) -> Tuple[tft.TFTransformOutput, Any, List[str], Any]:
    """Sample data of `scale` through the real ExampleGen and Transform in `workdir`, and
    what run_fn builds its model and datasets from: (the transform output, the data
    accessor, the train file patterns, the catalogue content)."""
    data_root = os.path.join(workdir, "data")
    datagen.generate(scale, 42, data_root)
    examples, transform_graph = run_ingest_and_transform(config, data_root, workdir)
    tft_output = tft.TFTransformOutput(transform_graph)
    data_accessor = tfx.components.DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
        record_batch_factory=tfxio_utils.get_record_batch_factory_from_artifact(
            [examples], []),
        data_view_decode_fn=None)
    train_files = [os.path.join(examples.uri, f"Split-{features.TRAIN_SPLIT}", "*")]
    content = catalog_content(
        build_catalog_batches(catalog_file_patterns(train_files),
                                      data_accessor, tft_output),
        tft_output, config.transform, config.data)
    return tft_output, data_accessor, train_files, content


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
    model = build_model(config.model, config.data, config.transform, tft_output,
                                steps * epochs, content)
    timer = EpochTimer()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    timed = timer.seconds[1:]
    return steps * (epochs - 1) * config.model.batch_size / sum(timed)


def data_and_model_options(command):
    """--scale and --experiment: the sample data trained on and the model config."""
    command = click.option("--experiment", default="tiny", show_default=True,
                           help="model config")(command)
    return click.option("--scale", default="tiny", show_default=True,
                        help="sample-data scale")(command)


@click.command()
@data_and_model_options
@click.option("--steps", default=60, show_default=True, help="train steps per epoch")
@click.option("--epochs", default=4, show_default=True, help="epochs (the first is untimed)")
def main(scale: str, experiment: str, steps: int, epochs: int) -> None:
    console = Console(width=120)
    config = config_lib.load(experiment)
    with tempfile.TemporaryDirectory() as tmp:
        tft_output, data_accessor, train_files, content = trainer_inputs(config, scale, tmp)

        def real_dataset() -> tf.data.Dataset:
            return build_dataset(train_files, data_accessor, tft_output,
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
