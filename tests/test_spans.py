"""Spans: a new span folder triggers a fresh ExampleGen run over the rolling window."""
import json
import os
import shutil

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx
from tfx.orchestration import metadata

from hyperrec.data import synthetic as datagen
from hyperrec.components import config as config_lib
from hyperrec.pipeline import pipeline as pipeline_def


def _run_example_gen(config, data_root, workdir):
    db = os.path.join(workdir, "metadata.sqlite")
    component = pipeline_def.example_gen_component(config, data_root)
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="spans", pipeline_root=os.path.join(workdir, "root"),
        components=[component], enable_cache=True,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db)))
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    return store.get_artifacts_by_type("Examples")


@pytest.mark.e2e
def test_new_span_triggers_a_run_over_the_last_k_spans(tmp_path):
    full = str(tmp_path / "full")
    datagen.generate("tiny", 5, full)
    spans = sorted(int(n.split("-")[1]) for n in os.listdir(full) if n.startswith("span-"))
    assert len(spans) >= 3
    data_root = str(tmp_path / "data")
    os.makedirs(data_root)
    shutil.copytree(os.path.join(full, "images"), os.path.join(data_root, "images"))
    for span in spans[:-1]:
        shutil.copytree(os.path.join(full, f"span-{span}"), os.path.join(data_root, f"span-{span}"))
    config = config_lib.load("tiny", ["data.window_spans=2"])
    workdir = str(tmp_path / "run")

    first = _run_example_gen(config, data_root, workdir)
    assert len(first) == 1
    assert first[0].custom_properties["span"].int_value == spans[-2]
    assert first[0].custom_properties["window_first_span"].int_value == spans[-3]

    # Nothing new: the cached output is reused, no new artifact.
    assert len(_run_example_gen(config, data_root, workdir)) == 1

    # A new span arrives: a new execution over the new window of 2 spans.
    shutil.copytree(os.path.join(full, f"span-{spans[-1]}"),
                    os.path.join(data_root, f"span-{spans[-1]}"))
    after = _run_example_gen(config, data_root, workdir)
    assert len(after) == 2
    newest = max(after, key=lambda a: a.id)
    assert newest.custom_properties["span"].int_value == spans[-1]
    assert newest.custom_properties["window_first_span"].int_value == spans[-2]
    with open(os.path.join(newest.uri, "ingest_report.json")) as f:
        assert json.load(f)["train_examples"] > 0
