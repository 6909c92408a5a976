"""The RankingEvaluator in a real LocalDagRunner run on `tiny` data: a model that loses to
most-popular on recall@10 is not pushed, and the run says why (stdout, MLMD, metrics.json)."""
from __future__ import annotations

import json
import os

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
from ml_metadata.metadata_store import metadata_store
from tfx.orchestration import metadata

from hyperrec.components import config as config_lib
from hyperrec.components.evaluation import component
from hyperrec.data import synthetic as datagen
from hyperrec.pipeline.runners import local as local_runner

pytestmark = pytest.mark.e2e


def test_a_model_that_loses_to_most_popular_is_not_pushed_and_the_reason_is_recorded(
        tmp_path, capfd):
    data_root = str(tmp_path / "data")
    datagen.generate("tiny", 7, data_root)
    # One training step in one epoch, exported without a refit: an untrained model. TFMA's
    # AUC gate is opened (min_auc 0) so that the ranking gate alone must refuse it; tiny's
    # default gate has no must_beat.
    config = config_lib.load("tiny", ["model.train_steps=1", "model.epochs=1",
                                      "model.refit_full_train=false", "eval.min_auc=0"])
    config.eval.must_beat = ("most_popular",)
    paths = local_runner.run(config, data_root, str(tmp_path / "run"))

    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(paths.metadata_path))
    [evaluation] = store.get_artifacts_by_type(component.RankingEvaluation.TYPE_NAME)
    blessings = store.get_artifacts_by_type("ModelBlessing")
    tfma_blessing = [b for b in blessings if b.id != max(b.id for b in blessings)]
    assert tfma_blessing[0].custom_properties["blessed"].int_value == 1  # TFMA passed
    ranking_blessing = max(blessings, key=lambda b: b.id)
    assert ranking_blessing.custom_properties["blessed"].int_value == 0
    reason = ranking_blessing.custom_properties["reason"].string_value
    assert evaluation.custom_properties["reason"].string_value == reason

    with open(os.path.join(evaluation.uri, component.METRICS_JSON)) as f:
        result = json.load(f)
    overall = result["slices"]["overall"]["metrics"]
    mine, popular = (overall[m]["recall@10"]["value"] for m in ("hyperrec", "most_popular"))
    assert mine <= popular
    assert reason == f"recall@10 {mine:.4f} <= most_popular {popular:.4f}"
    # Synthetic data: the pipeline hands the ground truth over, so taste match is measured.
    personal = result["personalisation"]
    assert personal["has_truth"] and personal["own_last_10"]["taste_category@10"] is not None
    assert {"taste_colour@10", "jaccard_distance@10", "overlap_recent_popular@10"} <= set(
        personal["methods"]["hyperrec"])
    assert len(personal["sample_users"]) == 3
    assert result["decision"] == {
        "blessed": False, "reason": reason, "tfma_blessed": True,
        "gate": {"metric": "recall@10", "must_beat": ["most_popular"], "max_regression": 0.0,
                 "must_improve_on_blessed": False}}
    assert f"RankingEvaluator: NOT BLESSED: {reason}" in capfd.readouterr().out

    # Nothing pushed: no version directory, and the Pusher recorded a refusal.
    assert not [d for d in os.listdir(paths.serving_dir) if d.isdigit()] \
        if os.path.isdir(paths.serving_dir) else True
    [pushed] = store.get_artifacts_by_type("PushedModel")
    assert pushed.custom_properties["pushed"].int_value == 0

    # Baselines were tuned inside their grids, on the validation slice at the end of train.
    for name in ("ease", "itemknn"):
        chosen = result["baseline_hyperparameters"][name]
        assert chosen["grid"][0] < chosen["value"] < chosen["grid"][-1], (name, chosen)
    for name in ("overall", "warm_items", "cold_items", "returning_users", "new_users"):
        assert name in result["slices"]
    assert os.path.exists(os.path.join(evaluation.uri, component.METRICS_TEXT))
