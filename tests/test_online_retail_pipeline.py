"""The whole pipeline on a real data set: a 100-customer sample of UCI Online Retail.

No item has an image, so this also proves the model copes with a missing modality: the
image tower is masked for every item and the scores stay finite.
"""
import glob
import os

import pipeline  # noqa: F401  (Keras env before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from components import features
from components.importers import online_retail
from pipeline import config as config_lib
from pipeline import local_runner
from serving import saved_model

pytestmark = [pytest.mark.e2e, pytest.mark.needs_shared]


@pytest.fixture(scope="module")
def retail_run(shared_data, tmp_path_factory):
    data_root = str(tmp_path_factory.mktemp("retail"))
    online_retail.import_online_retail(
        str(shared_data / "online_retail" / "onlineretail.rda"), data_root,
        max_customers=100, seed=0)
    workdir = str(tmp_path_factory.mktemp("retail_run"))
    paths = local_runner.run(config_lib.load("online_retail"), data_root, workdir)
    return paths


def test_online_retail_sample_is_trained_evaluated_and_pushed(retail_run):
    version, model_dir = saved_model.latest_version(retail_run.serving_dir)
    assert version > 0 and os.path.exists(os.path.join(model_dir, "saved_model.pb"))


def test_items_without_images_score_finitely_and_are_recommended(retail_run):
    examples_dir = sorted(glob.glob(os.path.join(
        retail_run.pipeline_root, "FileBasedExampleGen", "examples", "*")))[-1]
    records = tf.data.TFRecordDataset(glob.glob(os.path.join(examples_dir, "Split-eval", "*")),
                                      compression_type="GZIP")
    serialized = [r.numpy() for r in records.take(64)]
    statuses = {tf.train.Example.FromString(s).features.feature[
        features.IMAGE_STATUS].bytes_list.value[0] for s in serialized}
    assert statuses == {b"missing"}
    _, model_dir = saved_model.latest_version(retail_run.serving_dir)
    loaded = tf.saved_model.load(model_dir)
    scores = loaded.signatures["serving_default"](examples=tf.constant(serialized))["score"]
    assert np.isfinite(scores.numpy()).all()
    first = tf.train.Example.FromString(serialized[0]).features.feature
    recs = saved_model.recommend(model_dir, first[features.USER_ID].bytes_list.value[0].decode(),
                                 [], "unknown", first[features.TIMESTAMP].int64_list.value[0], 10)
    assert len(recs) == 10 and all(np.isfinite(score) for _, score in recs)
