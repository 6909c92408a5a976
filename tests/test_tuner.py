"""The Tuner: keras-tuner search in TFX's Tuner component, its best hyperparameters reaching
the Trainer, and the pipeline wiring behind ModelConfig.tune.

The component test runs a small pipeline for real with LocalDagRunner: Importers bring in
the synthetic examples and their Transform graph (tests/test_transform.py), then Tuner ->
Trainer exactly as pipeline/pipeline.py wires them.
"""
from __future__ import annotations

import dataclasses
import json
import os

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from hyperrec.schemas import features
from hyperrec.components.trainer import tuning as tuner_lib
from hyperrec.components.trainer.habits import apply_hyperparameters
from hyperrec.components import config as config_lib
from hyperrec.pipeline import pipeline as pipeline_def

import test_model
import test_transform as synthetic


def test_keras_tuner_builds_on_tf_keras():
    """The pinned keras-tuner checks models against tf-keras (the project's Keras); from 1.4
    it checks against Keras 3 and rejects our model (keras-tuner#1039)."""
    from keras_tuner.engine import tuner as kt_tuner
    assert kt_tuner.keras.Model is tf.keras.Model
    assert tf.keras.Model.__module__.startswith("tf_keras")


def test_apply_hyperparameters_overrides_model_config_fields():
    model_config = config_lib.ModelConfig(embedding_dim=16, learning_rate=0.003)
    best = {"space": [], "values": {"embedding_dim": 32, "learning_rate": 0.001}}
    tuned = apply_hyperparameters(model_config, best)
    assert (tuned.embedding_dim, tuned.learning_rate) == (32, 0.001)
    assert isinstance(tuned.embedding_dim, int)
    assert apply_hyperparameters(model_config, None) == model_config
    with pytest.raises(ValueError, match="not ModelConfig fields"):
        apply_hyperparameters(model_config, {"values": {"units": 3}})


def test_search_space_is_centred_on_the_config():
    hp = tuner_lib.search_space(config_lib.ModelConfig(embedding_dim=16, id_embedding_dim=8,
                                                       learning_rate=0.003))
    assert hp.values == {"embedding_dim": 16, "id_embedding_dim": 8, "batch_size": 128,
                         "learning_rate": 0.003, "temperature": 0.1, "id_dropout": 0.0,
                         "recent_popularity_days": 7}
    names = {p.name for p in hp.space}
    assert names <= {f.name for f in dataclasses.fields(config_lib.ModelConfig)}
    space = {p.name: p for p in hp.space}
    assert (space["temperature"].min_value, space["temperature"].max_value) == (0.05, 0.2)
    assert list(space["id_dropout"].values) == [0.0, 0.1, 0.2]
    assert list(space["recent_popularity_days"].values) == [3, 7, 14]
    assert list(space["batch_size"].values) == [64, 128, 256]
    # Without the recent-popularity term its window is not searched.
    assert "recent_popularity_days" not in tuner_lib.search_space(
        config_lib.ModelConfig(recent_popularity_counts=())).values


def test_every_trial_trains_on_as_many_rows():
    # 40 batches of 128 rows = 5,120 rows: 20 batches of 256, 80 of 64.
    model_config = config_lib.ModelConfig(batch_size=128, tune_steps=40)
    assert [tuner_lib.trial_steps(model_config, b) for b in (64, 128, 256)] == [80, 40, 20]
    assert tuner_lib.trial_steps(config_lib.ModelConfig(batch_size=8, tune_steps=1), 16) == 1


def test_a_trial_trains_on_batches_of_its_size():
    # 4 batches of 4 rows configured: a trial with 8-row batches trains 2 steps.
    model_config = config_lib.ModelConfig(batch_size=4, tune_steps=4)
    hypermodel = tuner_lib.TwoTowerHyperModel(model_config, config_lib.DataConfig(),
                                              config_lib.TransformConfig(), None, None)
    seen = []

    class BatchRecorder(tf.keras.layers.Layer):
        def call(self, x):
            if x.shape[0] is not None:  # not the symbolic call of build()
                seen.append(int(x.shape[0]))
            return x

    def trial(batch_size: int) -> None:
        hp = tuner_lib.search_space(model_config)
        hp.values["batch_size"] = batch_size
        model = tf.keras.Sequential([BatchRecorder(), tf.keras.layers.Dense(1)])
        model.build((None, 2))
        model.compile(loss="mse", run_eagerly=True)
        rows = tf.data.Dataset.from_tensor_slices((tf.ones([64, 2]), tf.ones([64, 1])))
        hypermodel.fit(hp, model, x=rows.batch(4).repeat(), epochs=1,
                       steps_per_epoch=model_config.tune_steps, verbose=0)

    trial(8)
    assert seen == [8, 8]
    seen.clear()
    trial(4)
    assert seen == [4, 4, 4, 4]


def test_sampled_negatives_join_each_trial_batch_after_it_is_cut_to_size():
    # Rows are re-cut to the trial's batch size first, then each batch gets its own batch
    # of sampled negatives (cutting the joined batches would mix the two).
    model_config = config_lib.ModelConfig(batch_size=4, tune_steps=4, sampled_negatives=3)
    negatives = tf.data.Dataset.from_tensors(
        {"sampled_negative/item_id_xf": tf.constant([7, 8, 9])}).repeat()
    hypermodel = tuner_lib.TwoTowerHyperModel(model_config, config_lib.DataConfig(),
                                              config_lib.TransformConfig(), None, None,
                                              sampled_negatives=(negatives, 10))
    seen = []

    class Recorder(tf.keras.Model):
        def train_step(self, data):
            seen.append((int(tf.shape(data["x"])[0]),
                         data["sampled_negative/item_id_xf"].numpy().tolist()))
            return {}

    hp = tuner_lib.search_space(model_config)
    hp.values["batch_size"] = 8
    model = Recorder()
    model.compile(run_eagerly=True)
    rows = tf.data.Dataset.from_tensor_slices({"x": tf.ones([64, 2])})
    hypermodel.fit(hp, model, x=rows.batch(4).repeat(), epochs=1,
                   steps_per_epoch=model_config.tune_steps, verbose=0)
    assert seen == [(8, [7, 8, 9]), (8, [7, 8, 9])]


def test_pipeline_adds_the_tuner_only_when_asked():
    def nodes(tune: bool):
        config = config_lib.load("tiny", [f"model.tune={tune}"])
        built = pipeline_def.create_pipeline(config, data_root="/data", pipeline_root="/root",
                                             serving_dir="/serving")
        return {c.id: c for c in built.components}

    assert "Tuner" not in nodes(False)
    with_tuner = nodes(True)
    assert "Tuner" in with_tuner
    trainer_inputs = with_tuner["Trainer"].inputs
    assert trainer_inputs["hyperparameters"].producer_component_id == "Tuner"


def test_tuner_component_searches_and_the_trainer_trains_the_best(tmp_path, synthetic_data):
    # The session's synthetic splits and Transform analysis (tests/conftest.py), imported.
    examples_root, transform_dir = synthetic_data["examples"], synthetic_data["transform"]
    model_config = dataclasses.replace(
        test_model.TEST_MODEL_CONFIG, tune=True, tune_max_trials=2, tune_steps=4,
        train_steps=6, epochs=1, early_stopping_patience=0)
    custom_config = {"model": dataclasses.asdict(model_config),
                     "data": dataclasses.asdict(synthetic.TEST_DATA_CONFIG),
                     "transform": dataclasses.asdict(synthetic.TEST_TRANSFORM_CONFIG)}

    examples = tfx.dsl.Importer(
        source_uri=examples_root, artifact_type=standard_artifacts.Examples,
        properties={"split_names": json.dumps([features.TRAIN_SPLIT, features.EVAL_SPLIT,
                                               features.CATALOG_SPLIT])},
    ).with_id("examples")
    transform_graph = tfx.dsl.Importer(
        source_uri=transform_dir, artifact_type=standard_artifacts.TransformGraph,
    ).with_id("transform_graph")
    train_args = tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT], num_steps=4)
    eval_args = tfx.proto.EvalArgs(splits=[features.EVAL_SPLIT], num_steps=2)
    tuner = tfx.components.Tuner(
        tuner_fn=pipeline_def.TUNER_FN, examples=examples.outputs["result"],
        transform_graph=transform_graph.outputs["result"], train_args=train_args,
        eval_args=eval_args, custom_config=custom_config)
    trainer_component = tfx.components.Trainer(
        run_fn=pipeline_def.RUN_FN, examples=examples.outputs["result"],
        transform_graph=transform_graph.outputs["result"],
        hyperparameters=tuner.outputs["best_hyperparameters"],
        train_args=train_args, eval_args=eval_args, custom_config=custom_config)
    root = str(tmp_path / "pipeline")
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="tuner-test", pipeline_root=root,
        components=[examples, transform_graph, tuner, trainer_component],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "metadata.sqlite"))))

    best_dir = _only_artifact_dir(root, "Tuner", "best_hyperparameters")
    with open(os.path.join(best_dir, "best_hyperparameters.txt")) as f:
        best = json.load(f)["values"]
    assert set(best) == {"embedding_dim", "id_embedding_dim", "batch_size", "learning_rate",
                         "temperature", "id_dropout"} | ({"recent_popularity_days"}
                                          if model_config.recent_popularity_counts else set())
    with open(os.path.join(_only_artifact_dir(root, "Tuner", "tuner_results"),
                           "tuner_results.json")) as f:
        trials = json.load(f)
    assert len(trials) == 2 and all(t["score"] is not None for t in trials)
    # The Trainer trained the best trial's sizes: the exported catalogue embeddings have
    # the tuned width, not the configured one.
    model_dir = os.path.join(_only_artifact_dir(root, "Trainer", "model"), "Format-Serving")
    loaded = tf.saved_model.load(model_dir)
    assert loaded.catalog_embeddings.shape[1] == best["embedding_dim"]


def _only_artifact_dir(pipeline_root: str, component: str, output: str) -> str:
    """<pipeline_root>/<component>/<output>/<execution id>: the one execution's output."""
    parent = os.path.join(pipeline_root, component, output)
    (execution,) = os.listdir(parent)
    return os.path.join(parent, execution)
