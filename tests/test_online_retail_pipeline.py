"""The whole pipeline on a real data set: a 100-customer sample of UCI Online Retail.

No item has an image, so this also proves the model copes with a missing modality: the
image tower is masked for every item and the scores stay finite.
"""
import glob
import os

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from tfx.orchestration import metadata

from hyperrec.schemas import features
from hyperrec.data.importers import online_retail
from hyperrec.components import config as config_lib
from hyperrec.pipeline.runners import local as local_runner
from hyperrec.serving import saved_model

pytestmark = [pytest.mark.e2e, pytest.mark.needs_shared]


@pytest.fixture(scope="module")
def retail_run(shared_data, tmp_path_factory):
    data_root = str(tmp_path_factory.mktemp("retail"))
    online_retail.import_online_retail(
        str(shared_data / "online_retail" / "onlineretail.rda"), data_root,
        max_customers=100, seed=0)
    workdir = str(tmp_path_factory.mktemp("retail_run"))
    # The plumbing on a 100-customer sample, not the experiment's training length.
    paths = local_runner.run(config_lib.load("online_retail", ["model.epochs=3"]), data_root,
                             workdir)
    return paths


def _store(paths):
    return metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(paths.metadata_path))


def _trained_model_dir(paths) -> str:
    """The Trainer's serving model (pushed or not: the Evaluator's gate decides that)."""
    model = max(_store(paths).get_artifacts_by_type("Model"), key=lambda a: a.id)
    return os.path.join(model.uri, "Format-Serving")


def test_every_component_runs_and_the_evaluator_decides(retail_run):
    """The whole pipeline runs on real data. Blessing is the Evaluator's call on a 100-customer
    sample (AUC of bought vs popularity-sampled items is close to the gate there); a blessed
    model must be pushed, an unblessed one must not."""
    assert [t.name for t in retail_run.timings if t.failed] == []
    ran = {t.name for t in retail_run.timings}
    assert {"FileBasedExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= ran
    blessing = max(_store(retail_run).get_artifacts_by_type("ModelBlessing"), key=lambda a: a.id)
    blessed = blessing.custom_properties["blessed"].int_value == 1
    pushed = saved_model.versions(retail_run.serving_dir)
    assert bool(pushed) == blessed


def test_items_without_images_score_finitely_and_are_recommended(retail_run):
    examples_dir = sorted(glob.glob(os.path.join(
        retail_run.pipeline_root, "FileBasedExampleGen", "examples", "*")))[-1]
    records = tf.data.TFRecordDataset(glob.glob(os.path.join(examples_dir, "Split-eval", "*")),
                                      compression_type="GZIP")
    serialized = [r.numpy() for r in records.take(64)]
    statuses = {tf.train.Example.FromString(s).features.feature[
        features.IMAGE_STATUS].bytes_list.value[0] for s in serialized}
    assert statuses == {b"missing"}
    model_dir = _trained_model_dir(retail_run)
    loaded = tf.saved_model.load(model_dir)
    scores = loaded.signatures["serving_default"](examples=tf.constant(serialized))["score"]
    assert np.isfinite(scores.numpy()).all()
    first = tf.train.Example.FromString(serialized[0]).features.feature
    recs = saved_model.recommend(model_dir, first[features.USER_ID].bytes_list.value[0].decode(),
                                 [], "unknown", first[features.TIMESTAMP].int64_list.value[0], 10)
    assert len(recs) == 10 and all(np.isfinite(score) for _, score in recs)
