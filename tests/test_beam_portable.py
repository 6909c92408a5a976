"""The Beam-powered components on Beam's PortableRunner with an EXTERNAL SDK worker pool (the
`portable` preset, pipeline/beam.py) produce what the DirectRunner produces on the same tiny
data: the stand-in for Flink/Spark, where every function and coder crosses a process boundary.

One MLMD store, three LocalDagRunner runs with caching off:
1. DirectRunner, up to the Evaluator (the reference; its Trainer makes the one model);
2. portable, the Evaluator alone (partial run: run 1's examples and model);
3. portable, ExampleGen .. Transform.
The worker pool is a `worker_pool_main` process of this venv that the fixture starts and
kills with its process group (the SDK workers it spawns included).
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
import tensorflow_transform as tft
from google.protobuf import json_format
from ml_metadata.metadata_store import metadata_store
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import v1 as tfx
from tfx.dsl.compiler import compiler
from tfx.orchestration import metadata
from tfx.orchestration.portable import partial_run_utils

from hyperrec.components import config as config_lib
from hyperrec.data import synthetic
from hyperrec.pipeline import beam
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.schemas import features

pytestmark = pytest.mark.e2e

# One untrained step: the Evaluator needs a model, not a good one.
OVERRIDES = ["model.train_steps=1", "model.epochs=1", "model.refit_full_train=false"]
BEAM_JOBS = 4  # ExampleGen, StatisticsGen, Transform, Evaluator: one Beam job each
SPLITS = (features.TRAIN_SPLIT, features.EVAL_SPLIT, features.CATALOG_SPLIT)
STARTED_WORKER = "Starting worker with command"  # worker_pool_main's line per SDK worker


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    """`worker_pool_main` on a free port; it starts one SDK worker process per Beam job with
    the `python` on PATH, so this venv's comes first (the project package imports there)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("worker-pool") / "pool.log"
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    with open(log_path, "w") as log:
        pool = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
             f"--service_port={port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert pool.poll() is None, log_path.read_text()[-3000:]
            try:
                socket.create_connection(("localhost", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "worker pool did not listen in 120 s"
                time.sleep(0.5)
        yield {"address": f"localhost:{port}", "log": log_path}
    finally:
        # The pool and the SDK workers it spawned share the session's process group.
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(timeout=30)
        for _ in range(100):
            try:
                os.killpg(pool.pid, 0)
            except ProcessLookupError:
                break  # nothing of the group is left
            time.sleep(0.1)
        else:
            os.killpg(pool.pid, signal.SIGKILL)
            pytest.fail("SDK workers outlived the worker pool's SIGTERM")


@pytest.fixture(scope="module")
def runs(worker_pool, tmp_path_factory):
    root = tmp_path_factory.mktemp("beam-portable")
    data_root = str(root / "data")
    synthetic.generate("tiny", 7, data_root)
    config = config_lib.load("tiny", OVERRIDES)
    store_path = str(root / "metadata.sqlite")

    def run(settings: beam.BeamSettings, from_nodes=None, to_nodes=None) -> float:
        common, ingest = beam.pipeline_args(settings)
        pipeline = compiler.Compiler().compile(pipeline_def.create_pipeline(
            config, data_root=data_root, pipeline_root=str(root / "pipeline"),
            serving_dir=str(root / "serving"), metadata_path=store_path,
            beam_pipeline_args=common, ingest_beam_pipeline_args=ingest,
            enable_cache=False))  # the same inputs on another runner must run again
        # A partial run copies its upstream nodes' outputs from the previous run; the first
        # run's DistributionValidator has no baseline and no successful execution to copy.
        partial_run_utils.mark_pipeline(pipeline, from_nodes=from_nodes, to_nodes=to_nodes,
                                        skip_snapshot_nodes=["DistributionValidator"])
        start = time.monotonic()
        tfx.orchestration.LocalDagRunner().run_with_ir(pipeline)
        return time.monotonic() - start

    portable = beam.BeamSettings(preset="portable",
                                 environment_config=worker_pool["address"])
    seconds = {"direct": run(beam.from_config(config), to_nodes=["Evaluator"]),
               "portable_evaluator": run(portable, from_nodes=["Evaluator"],
                                         to_nodes=["Evaluator"]),
               "portable_ingest_transform": run(portable, to_nodes=["Transform"])}
    print(f"pipeline runs (s): {json.dumps({k: round(v, 1) for k, v in seconds.items()})}")
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(store_path))

    def direct_and_portable(type_name: str, producer: str) -> List[str]:
        uris = [a.uri for a in sorted(store.get_artifacts_by_type(type_name), key=lambda a: a.id)
                if f"{os.sep}{producer}{os.sep}" in a.uri]
        assert len(uris) == 2, (type_name, uris)
        return uris  # runs 1 and 2/3 in the order they ran

    return {"examples": direct_and_portable("Examples", "FileBasedExampleGen"),
            "statistics": direct_and_portable("ExampleStatistics", "StatisticsGen"),
            "transform": direct_and_portable("TransformGraph", "Transform"),
            "evaluation": direct_and_portable("ModelEvaluation", "Evaluator"),
            "pool_log": worker_pool["log"]}


def test_every_beam_job_ran_in_a_worker_the_external_pool_started(runs):
    """The portable runs really used the pool: one SDK worker process per Beam job (the
    Python job service asks for one per job; Flink/Spark: --sdk_worker_parallelism)."""
    assert runs["pool_log"].read_text().count(STARTED_WORKER) == BEAM_JOBS


def _records(split_dir: str) -> List[bytes]:
    files = tf.io.gfile.glob(os.path.join(split_dir, "*.gz"))
    return sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def test_example_gen_writes_the_same_examples_per_split(runs):
    direct, portable = runs["examples"]
    for split in SPLITS:
        expected = _records(os.path.join(direct, f"Split-{split}"))
        assert expected, split
        assert _records(os.path.join(portable, f"Split-{split}")) == expected, split
    reports = [json.load(open(os.path.join(uri, "ingest_report.json"))) for uri in runs["examples"]]
    for report in reports:
        report.pop("timestamp_horizon")  # the time each ExampleGen ran
    assert reports[0] == reports[1]


def _close(expected, actual, where: str) -> None:
    """Equal structures; floats within 1e-6 relative (sums in another order)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            _close(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (e, a) in enumerate(zip(expected, actual)):
            _close(e, a, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-9), (where, expected,
                                                                            actual)
    else:
        assert actual == expected, (where, expected, actual)


def _statistics(uri: str, split: str) -> Dict[str, dict]:
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with open(os.path.join(uri, f"Split-{split}", "FeatureStats.pb"), "rb") as handle:
        stats.ParseFromString(handle.read())
    [dataset] = stats.datasets
    return {"num_examples": dataset.num_examples,
            "features": {".".join(f.path.step): json_format.MessageToDict(f)
                         for f in dataset.features}}


def test_statistics_gen_computes_the_same_statistics(runs):
    direct, portable = runs["statistics"]
    for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
        expected = _statistics(direct, split)
        assert expected["num_examples"] > 0 and expected["features"]
        _close(expected, _statistics(portable, split), split)


def test_transform_analyses_the_same_vocabularies_and_transforms_alike(runs):
    outputs = [tft.TFTransformOutput(uri) for uri in runs["transform"]]
    assets = [os.path.join(o.transform_savedmodel_dir, "assets") for o in outputs]
    names = sorted(os.listdir(assets[0]))
    assert names and names == sorted(os.listdir(assets[1]))
    for name in names:
        with open(os.path.join(assets[0], name), "rb") as a, \
                open(os.path.join(assets[1], name), "rb") as b:
            assert a.read() == b.read(), name
    assert outputs[0].transformed_metadata.schema == outputs[1].transformed_metadata.schema
    # Both graphs on the same raw eval examples.
    serialized = _records(os.path.join(runs["examples"][0], f"Split-{features.EVAL_SPLIT}"))
    raw = tf.io.parse_example(tf.constant(serialized[:64]), outputs[0].raw_feature_spec())
    expected, actual = (o.transform_features_layer()(raw) for o in outputs)
    assert set(expected) == set(actual)
    for name in expected:
        if expected[name].dtype == tf.string:  # the image bytes
            assert actual[name].numpy().tolist() == expected[name].numpy().tolist(), name
        else:
            # Analyzers' float32 sums (z-score means and variances) combine in the runner's
            # order: a few ULPs apart (3.6e-7 seen on a scaled price), nothing more.
            np.testing.assert_allclose(actual[name].numpy(), expected[name].numpy(),
                                       rtol=1e-6, atol=1e-5, err_msg=name)


def _metrics(uri: str) -> Dict[str, float]:
    """Every metric of every slice, flattened to `slice/path.to.value`."""
    flat: Dict[str, float] = {}

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if key else path)  # "": the default output
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            flat[path] = float(node)

    for slice_key, metrics in tfma.load_eval_result(uri).slicing_metrics:
        walk(metrics, str(slice_key))
    return flat


def test_evaluator_computes_the_same_metrics(runs):
    expected, actual = (_metrics(uri) for uri in runs["evaluation"])
    assert any("ndcg" in key.lower() for key in expected), sorted(expected)[:20]
    assert any("auc" in key.lower() for key in expected)
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert math.isclose(actual[key], value, rel_tol=1e-6, abs_tol=1e-9), (key, value,
                                                                             actual[key])
