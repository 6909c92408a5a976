"""`hyperrec export-lite` (serving/lite.py): the TFLite recommender against the SavedModel.

A tiny model is trained on the synthetic splits (test_model.py's configuration and the
session's Transform analysis), exported by the Trainer's own run_fn, then converted; the
tf.lite interpreter runs each exported file on a few eval users and answers what the
SavedModel's `recommend` signature answers.
"""
import json
import os
import subprocess
import sys

import hyperrec.components  # noqa: F401  (Keras env before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf

from hyperrec.components import trainer
from hyperrec.schemas import features
from hyperrec.serving import lite

sys.path.insert(0, os.path.dirname(__file__))
import test_model  # noqa: E402  (the tiny model configuration and FnArgs)
import test_transform as synthetic  # noqa: E402

K = 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synthetic_data):
    examples_root = str(tmp_path_factory.mktemp("examples"))
    rows = synthetic.write_examples(examples_root)
    fn_args = test_model.make_fn_args(examples_root, synthetic_data["transform"],
                                      str(tmp_path_factory.mktemp("model")))
    trainer.run_fn(fn_args)
    out = str(tmp_path_factory.mktemp("lite"))
    metadata = lite.export(fn_args.serving_model_dir, out,
                           os.path.join(examples_root, f"Split-{features.TRAIN_SPLIT}"),
                           representative_rows=64)
    return {"model_dir": fn_args.serving_model_dir, "out": out, "metadata": metadata,
            "rows": rows}


def _queries(rows):
    newest = max(r[features.TIMESTAMP] for r in rows["eval"])
    users = [r for r in rows["eval"] if r[features.HISTORY]][:6]
    queries = [lite.Query(r[features.USER_ID], list(r[features.HISTORY]), r[features.DEVICE],
                          r[features.TIMESTAMP]) for r in users]
    # A user the model never saw, no history, at the newest time (every item exists).
    return queries + [lite.Query("never_seen_user", [], "", newest)]


def test_three_forms_and_metadata_are_written(exported):
    metadata, out = exported["metadata"], exported["out"]
    assert set(metadata["forms"]) == set(lite.FORMS)
    sizes = {form: os.path.getsize(os.path.join(out, entry["file"]))
             for form, entry in metadata["forms"].items()}
    # Sizes are bench_lite's business: this model's weights are too few for quantisation
    # to shrink the file (dynamic range leaves tensors under 1,024 values float).
    assert all(size == metadata["forms"][form]["bytes"] > 0 for form, size in sizes.items())
    with open(os.path.join(out, lite.METADATA_FILE)) as handle:
        assert json.load(handle) == metadata
    assert metadata["versions"]["tensorflow"] == tf.__version__
    assert {features.USER_ID_XF, features.HISTORY_XF, lite.HISTORY_ROWS, lite.REQUEST_DAY,
            lite.K_INPUT} <= set(metadata["inputs"])
    # The whole signature needs TF ops for its Transform layer and catalogue index: named.
    assert {"LookupTableFindV2", "StringLower"} <= set(
        metadata["unsupported_ops_whole_recommend"])
    assert metadata["vocabulary"] and all(
        os.path.exists(os.path.join(out, name)) for name in metadata["vocabulary"])
    assert len(metadata["catalog"]) == len(exported["rows"]["items"])


def test_the_tflite_interpreter_answers_like_the_saved_model(exported):
    loaded = tf.saved_model.load(exported["model_dir"])
    host = lite.HostSide(loaded)
    queries = _queries(exported["rows"])
    expected = lite.saved_model_recommend(loaded, queries, k=K)
    reference = loaded.signatures[features.RECOMMEND](
        user_id=tf.constant([q.user_id for q in queries]),
        history_item_ids=tf.ragged.constant([q.history or [""] for q in queries]).to_tensor(""),
        device=tf.constant([q.device for q in queries]),
        timestamp=tf.constant([q.timestamp for q in queries], tf.int64),
        k=tf.constant([K] * len(queries), tf.int32))[features.SCORES].numpy()
    for form, entry in exported["metadata"]["forms"].items():
        with open(os.path.join(exported["out"], entry["file"]), "rb") as handle:
            model = lite.LiteRecommender(handle.read(), exported["metadata"]["catalog"])
        answers = [model.recommend(host.inputs([q], k=K))[0] for q in queries]
        if form == "float32":
            assert answers == expected
            rows, scores = model.rows(host.inputs(queries, k=K))  # a batch too
            np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-5)
        else:
            assert lite.top_k_parity(expected, answers, K) >= 0.6, (form, answers, expected)
        for query, answer in zip(queries, answers):
            assert not set(answer) & set(query.history), form  # history excluded


def test_export_lite_command_prints_each_form(exported, tmp_path):
    """The `hyperrec export-lite` command on the same model (a fresh process)."""
    hyperrec = os.path.join(os.path.dirname(sys.executable), "hyperrec")
    train = exported["metadata"]["train_split"]
    done = subprocess.run([hyperrec, "export-lite", "--model", exported["model_dir"],
                           "--train-split", train, "--out", str(tmp_path / "out"),
                           "--representative-rows", "16"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for form in lite.FORMS:
        assert f"{form}:" in done.stdout and (tmp_path / "out" / f"recommend_{form}.tflite").exists()
    assert "LookupTableFindV2" in done.stdout
