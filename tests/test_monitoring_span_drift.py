"""Drift of a new span inside the pipeline: the real create_pipeline, run with LocalDagRunner
up to SpanDriftGate (a partial run: ExampleGen, StatisticsGen, the previous-statistics
resolver, DistributionValidator, the gate) on `tiny` sample data, whose shift (a batch of
bags) lands at span 4.

run 1: spans 1-3, no previous run: nothing compared, passes.
run 2: span 4 arrives (the real shift): item_category drift is reported, the run goes on.
run 3: span 5 is broken (every item a bag): the gate stops the run, naming the feature.
"""
import datetime as dt
import json
import os
import shutil

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pandas as pd
import pytest
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from hyperrec.components import config as config_lib
from hyperrec.schemas import features
from hyperrec.components import span_drift
from hyperrec.data import synthetic as datagen
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.pipeline.runners import local as local_runner

GATE = "SpanDriftGate"


def _run(config, data_root, workdir):
    paths = local_runner.RunPaths(workdir, data_root)
    pipeline = pipeline_def.create_pipeline(
        config, data_root=data_root, pipeline_root=paths.pipeline_root,
        serving_dir=paths.serving_dir, metadata_path=paths.metadata_path,
        beam_pipeline_args=local_runner.beam_args(config))
    tfx.orchestration.LocalDagRunner().run(pipeline, run_options=RunOptions(to_nodes=[GATE]))
    return paths


def _reports(paths):
    """Every gate report in run order, read from the pipeline root: a failed execution's
    output is written but not published to MLMD."""
    root = os.path.join(paths.pipeline_root, GATE, "report")
    runs = sorted(os.listdir(root), key=int)  # one folder per execution id
    return [json.load(open(os.path.join(root, run, span_drift.REPORT_FILE))) for run in runs]


def _broken_span(source, target, shift_days=7):
    """span-5: span 4's interactions a week later, every item a bag."""
    os.makedirs(target)
    interactions = pd.read_csv(os.path.join(source, "interactions.csv"), dtype=str)
    later = [dt.datetime.fromisoformat(t.replace("Z", "+00:00")) + dt.timedelta(days=shift_days)
             for t in interactions["timestamp"]]
    interactions["timestamp"] = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in later]
    interactions.to_csv(os.path.join(target, "interactions.csv"), index=False)
    items = pd.read_csv(os.path.join(source, "items.csv"), dtype=str, keep_default_na=False)
    items["category"] = "bags"
    items.to_csv(os.path.join(target, "items.csv"), index=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    generated = str(tmp_path_factory.mktemp("generated"))
    datagen.generate("tiny", 7, generated)
    data_root = str(tmp_path_factory.mktemp("data"))
    shutil.copytree(os.path.join(generated, "images"), os.path.join(data_root, "images"))
    for span in (1, 2, 3):
        shutil.copytree(os.path.join(generated, f"span-{span}"),
                        os.path.join(data_root, f"span-{span}"))
    workdir = str(tmp_path_factory.mktemp("work"))
    config = config_lib.load("tiny")
    _run(config, data_root, workdir)
    shutil.copytree(os.path.join(generated, "span-4"), os.path.join(data_root, "span-4"))
    paths = _run(config, data_root, workdir)
    _broken_span(os.path.join(generated, "span-4"), os.path.join(data_root, "span-5"))
    with pytest.raises(RuntimeError) as stopped:
        _run(config, data_root, workdir)
    return dict(reports=_reports(paths), error=str(stopped.value), config=config)


def test_first_run_has_nothing_to_compare(runs):
    first = runs["reports"][0]
    assert first["compared"] is False and first["broken"] == []


def test_the_real_shift_is_reported_and_the_run_goes_on(runs):
    shifted = runs["reports"][1]
    assert shifted["compared"] is True and shifted["broken"] == []
    assert features.CATEGORY in shifted["drifted_features"]
    category = next(m for m in shifted["measurements"] if m["feature"] == features.CATEGORY)
    assert 0.05 < category["value"] < runs["config"].data.max_span_drift


def test_a_broken_span_stops_the_run(runs):
    # TFX removes a failed execution's outputs: the gate's message is the report.
    assert len(runs["reports"]) == 2
    assert "BrokenSpanError" in runs["error"] or "moved further than a shift" in runs["error"]
    assert f"{features.CATEGORY}: L_INFTY" in runs["error"]


def test_validator_config_follows_the_schema():
    from tensorflow_metadata.proto.v0 import schema_pb2
    schema = schema_pb2.Schema()
    schema.feature.add(name="a").drift_comparator.infinity_norm.threshold = 0.2
    schema.feature.add(name="b").drift_comparator.jensen_shannon_divergence.threshold = 0.3
    schema.feature.add(name="c")
    config = span_drift.validator_config(schema)
    got = [(f.path.step[0], f.distribution_comparator) for f in config.default_slice_config.feature]
    assert [name for name, _ in got] == ["a", "b"]
    assert got[0][1].infinity_norm.threshold == pytest.approx(0.2)
    assert got[1][1].jensen_shannon_divergence.threshold == pytest.approx(0.3)
