"""Training habits of run_fn: a killed training resumes, early stopping, the learning-rate
schedule (same-seed determinism is in tests/test_distribution.py, beside its trainings).

Trainings run in fresh processes (tests/test_distribution.py's TRAIN_SCRIPT) on the shared
synthetic data, so a SIGKILL hits a real training and seeds start from a clean runtime.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import time

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from hyperrec.components.trainer.build import build_model, learning_rate
from hyperrec.components.trainer.callbacks import monitor_mode
from hyperrec.components.trainer.fit import best_epoch
from hyperrec.components.trainer.input import (build_sampled_negatives, catalog_file_patterns,
                                               recent_count_table)
from hyperrec.schemas import features
from hyperrec.components import transform
from hyperrec.components.model.retrieval import RetrievalTask
from hyperrec.components import config as config_lib
from hyperrec.components.evaluation import metrics, model_ranking, protocol
from hyperrec.components.evaluation import ranking_validation as validation
from hyperrec.components.model import popularity_prior

import test_model
import test_transform as synthetic

from test_distribution import data, finish, read_history, start_training  # noqa: F401


def _epoch_lines(log: str) -> list:
    """The epoch numbers Keras printed ("Epoch 3/6" -> 3), in order."""
    return [int(line.split()[1].split("/")[0]) for line in log.splitlines()
            if line.startswith("Epoch ") and "/" in line.split()[1]]


def test_killed_training_resumes_from_the_last_backed_up_epoch(data, tmp_path):  # noqa: F811
    model_root = str(tmp_path / "model")
    epochs = 6
    model = {"train_steps": epochs * 8, "epochs": epochs, "batch_size": 32,
             "early_stopping_patience": 0, "refit_full_train": False,
             "validation_metric": ""}  # one phase, no per-epoch ranking: resuming is the point
    process = start_training(data, model_root, model)
    # Kill (SIGKILL: no cleanup, as a preempted machine) once epoch 3 has begun: epochs 1
    # and 2 have ended, and BackupAndRestore saves at every epoch end.
    deadline = time.monotonic() + 900  # a bound on waiting, not a speed claim: CI boxes are slow
    killed_in = None
    while time.monotonic() < deadline and process.poll() is None:
        with open(model_root + ".log") as f:
            seen = _epoch_lines(f.read())
        if seen and seen[-1] >= 3:
            process.send_signal(signal.SIGKILL)
            killed_in = seen[-1]
            break
        time.sleep(0.05)
    assert process.wait(timeout=60) == -signal.SIGKILL, "training ended before the kill"
    backup_dir = os.path.join(model_root, "model_run", "backup")
    assert os.path.isdir(backup_dir) and os.listdir(backup_dir)
    assert not os.path.exists(os.path.join(model_root, "model_run", "history.json"))

    log = finish(start_training(data, model_root, model, run_dir=model_root + "_rerun"),
                 model_root + "_rerun")
    resumed = _epoch_lines(log)
    history = read_history(model_root)
    # Keras numbers epochs from 1 in its log and from 0 in History. The killed run had
    # finished epoch killed_in - 1 (or killed_in, if the kill landed between its backup and
    # the next "Epoch" line): the rerun continues there instead of starting at 1.
    assert resumed[0] in (killed_in, killed_in + 1), (killed_in, resumed)
    assert history["epochs"] == list(range(resumed[0] - 1, epochs))
    assert resumed[-1] == epochs
    assert not os.path.exists(backup_dir) or not os.listdir(backup_dir)  # done: removed


def test_early_stopping_stops_when_the_validation_metric_stops_improving(data, tmp_path):  # noqa: F811
    # A learning rate of 0 leaves the weights, hence val_loss on the validation slice,
    # unchanged: no epoch improves on the first, so patience 1 stops after epoch 2 of 6.
    model_root = str(tmp_path / "model")
    finish(start_training(data, model_root, {
        "train_steps": 12, "epochs": 6, "batch_size": 32, "learning_rate": 0.0,
        "lr_schedule": "constant", "early_stopping_monitor": "val_loss",
        "early_stopping_patience": 1}), model_root, timeout=600)  # two fits, two traces
    history = read_history(model_root)
    assert history["epochs"] == [0, 1]
    # Epoch 0 is the selected one: the refit trains one epoch over the whole train split.
    assert history["refit"]["epochs"] == [0]


def test_warmup_cosine_learning_rate_schedule():
    model_config = config_lib.ModelConfig(learning_rate=0.01, warmup_fraction=0.1,
                                          min_lr_ratio=0.1)
    schedule = learning_rate(model_config, total_steps=100)
    rates = np.array([float(schedule(step)) for step in range(101)])
    assert rates[0] == 0.0
    np.testing.assert_allclose(rates[10], 0.01, rtol=1e-6)  # warmup ends at the peak
    assert np.all(np.diff(rates[:11]) > 0)  # linear warmup
    assert np.all(np.diff(rates[10:]) <= 1e-9)  # then only decays
    np.testing.assert_allclose(rates[100], 0.001, rtol=1e-5)  # to lr * min_lr_ratio
    constant = dataclasses.replace(model_config, lr_schedule="constant")
    assert learning_rate(constant, total_steps=100) == 0.01


def test_best_epoch_is_an_epoch_number_after_a_resume():
    # A run resumed at epoch 2 records epochs 2 and 3 only: the best (min loss) is epoch 3.
    history = tf.keras.callbacks.History()
    history.epoch = [2, 3]
    history.history = {"val_loss": [0.3, 0.2], "val_recall@10": [0.5, 0.4]}
    assert best_epoch(history, "val_loss") == 3
    assert best_epoch(history, "val_recall@10") == 2  # max mode
    assert best_epoch(history, "val_auc") == 3  # not recorded: the last epoch
    history.history = {"val_loss": [0.2, 0.2]}
    assert best_epoch(history, "val_loss") == 2  # the first of ties


# ---- model selection on the validation slice at the end of train --------------------------
def _events(timestamps, users, items, labels=None) -> protocol.Events:
    n = len(timestamps)
    labels = [1] * n if labels is None else labels
    return protocol.Events(
        users=np.array(users, object), items=np.array(items, object),
        timestamps=np.array(timestamps, np.int64),
        events=np.array(["click" if l else "impression" for l in labels], object),
        labels=np.array(labels, np.int64), devices=np.array(["web"] * n, object))


def test_validation_slice_is_the_end_of_train():
    day = 86400
    timestamps = np.array([0, day, 2 * day, 9 * day, 10 * day])
    # 10 days of train, a 3-day slice: from day 7 on (rows at days 9 and 10).
    assert validation.split_time(timestamps, 3.0) == 7 * day
    for days in (10.0, 10.5):  # nothing before the slice is left to train on
        with pytest.raises(ValueError, match="validation slice leaves"):
            validation.split_time(timestamps, days)
    with pytest.raises(ValueError, match="train split is empty"):
        validation.split_time(np.array([], np.int64), 1.0)


def test_validation_task_targets_new_items_after_the_split():
    day = 86400
    events = _events([0, day, 2 * day, 8 * day, 9 * day, 9 * day],
                     ["u1", "u1", "u2", "u1", "u1", "u3"],
                     ["a", "b", "a", "b", "c", "c"])
    catalogue = protocol.Catalogue(item_ids=np.array(["a", "b", "c", "d"], object),
                                   cold=np.zeros(4, bool))
    task = validation.validation_task(events, catalogue, 7 * day, history_length=5)
    # u1: b again (not new) and c (new); u2: nothing after; u3: no train positive before.
    assert task.users == ["u1"]
    assert [t.tolist() for t in task.targets] == [[2]]
    assert [e.tolist() for e in task.excluded] == [[0, 1]]
    assert task.history == [["a", "b"]] and task.cutoff == 7 * day


def test_ranking_metric_names_and_depths():
    assert validation.metrics_depth("recall@10") == 10
    assert validation.metrics_depth("ndcg@5") == 5
    assert validation.metrics_depth("mrr") == 100
    for bad in ("auc", "recall@0", "recall@x", "precision@10"):
        with pytest.raises(ValueError, match="unknown ranking metric"):
            validation.metrics_depth(bad)
    assert monitor_mode("val_loss") == "min"
    assert monitor_mode("val_recall@10") == "max"
    assert monitor_mode("val_auc") == "max"


def test_selection_never_reads_the_eval_split_and_ranks_like_the_export(data, tmp_path):  # noqa: F811
    """Without an eval split at all, training selects on the validation slice: the
    val_recall@10 it logs is what the exported recommend signature scores on the same
    validation task (the evaluation protocol, one step back in time)."""
    model_root = str(tmp_path / "model")
    examples = str(tmp_path / "examples_without_eval")
    shutil.copytree(data["examples"], examples, ignore=shutil.ignore_patterns("Split-eval"))
    finish(start_training({**data, "examples": examples}, model_root, {
        "epochs": 2, "early_stopping_patience": 0, "refit_full_train": False}), model_root)
    history = read_history(model_root)
    logged = history["metrics"]["val_recall@10"]
    assert len(logged) == 2 and "val_auc" in history["metrics"] and "refit" not in history
    events = protocol.read_split(data["examples"], "train")
    split = validation.split_time(events.timestamps, test_model.TEST_MODEL_CONFIG.validation_days)
    task = validation.validation_task(events, protocol.read_catalogue(data["examples"]),
                                      split, synthetic.TEST_DATA_CONFIG.history_length)
    # The export serves recent popularity as of the end of train (model/popularity_prior.py);
    # the logged metric used the counts from before the slice: with those, the export ranks
    # the slice exactly as logged.
    served = tf.saved_model.load(os.path.join(model_root, "serving_model"))
    tft_output = tft.TFTransformOutput(data["transform"])
    first_day, table = recent_count_table(
        test_model.TEST_MODEL_CONFIG, tft_output, synthetic.TEST_TRANSFORM_CONFIG, events)
    vocabulary = tft_output.vocabulary_by_name(transform.ITEM_VOCAB)
    rows = [vocabulary.index(i) + 1 if i in vocabulary else len(vocabulary) + 1
            for i in served.catalog_item_ids.numpy()]
    logits = served.model.recent_popularity.bucket_logits.numpy()
    assert np.abs(logits).max() > 0  # the term trained

    def prior(column: int) -> np.ndarray:
        buckets = np.searchsorted(test_model.TEST_MODEL_CONFIG.recent_popularity_counts,
                                  table[rows, column], side="right")
        return test_model.TEST_MODEL_CONFIG.temperature * logits[buckets]

    np.testing.assert_allclose(served.catalog_prior.numpy(), prior(-1), rtol=1e-5, atol=1e-7)
    served.catalog_prior.assign(prior(split // 86_400 - first_day))
    signature = served.signatures["recommend_excluding"]
    ranked = model_ranking.rank_task(
        lambda request: signature(**request), task, 10,
        history_width=synthetic.TEST_DATA_CONFIG.history_length, k_covers_exclusions=True)
    expected = metrics.per_user(ranked, task.targets, task.popularity, [10])["recall@10"].mean()
    assert len(task.users) >= 5
    np.testing.assert_allclose(logged[-1], expected, atol=1e-6)


def test_recent_counts_are_users_per_day_in_the_days_before():
    day = 86_400
    users = np.array(["a", "a", "a", "b", "c", "c", "d"])
    items = np.array(["x", "x", "x", "x", "y", "x", "y"])
    days = np.array([100.1, 100.5, 101.2, 101.9, 100.3, 97.0, 101.0])
    labels = np.array([1, 1, 1, 1, 1, 1, 0])
    table = popularity_prior.daily_window_counts(
        users, items, (days * day).astype(np.int64), labels, {"x": 1, "y": 2}, table_rows=3,
        first_day=99, num_days=5, window_days=2)
    # Column k counts days 99 + k - 2 .. 99 + k - 1, one per user and day: x has a@100 (twice
    # that day: once), a@101, b@101; c@97 is before the table; y has c@100, d@101 unengaged.
    assert table.tolist() == [[0, 0, 0, 0, 0],   # padding row
                              [0, 0, 1, 3, 2],   # days <99 | 99 | 99-100 | 100-101 | 101-102
                              [0, 0, 1, 1, 0]]


def test_retrieval_adds_recent_popularity_before_each_querys_day():
    """Item 1 was chosen by 3 users on day 10, item 2 by 1 user on day 11 (1-day window):
    the query on day 11 sees item 1's 3, the query on day 12 sees item 2's 1."""
    layer = popularity_prior.RecentPopularity([1, 2], table_rows=3, first_day=10, num_days=3)
    layer.counts.assign([[0, 0, 0], [0, 3, 0], [0, 0, 1]])
    layer.bucket_logits.assign([-1.0, 0.5, 2.0])  # count 0, 1, >= 2
    counts = layer.counts_at(tf.constant([1, 2]), tf.constant([11.5, 12.0, 30.0]))
    np.testing.assert_allclose(counts, [[3, 0], [0, 1], [0, 1]])
    task = RetrievalTask(temperature=1.0, item_vocab_size=3)
    queries = tf.math.l2_normalize(tf.constant([[1.0, 0.0], [0.0, 1.0]]), axis=1)
    items = tf.math.l2_normalize(tf.constant([[1.0, 0.5], [0.2, 1.0]]), axis=1)
    loss = task(queries, items, tf.constant([1, 2], tf.int64), tf.constant([1, 1]),
                recent_popularity=layer, query_days=tf.constant([11.2, 12.7])).numpy()
    logits = queries.numpy() @ items.numpy().T + np.array([[2.0, -1.0], [-1.0, 0.5]])
    expected = np.mean([np.log(np.exp(logits[r]).sum()) - logits[r, r] for r in range(2)])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


# ---- mixed negatives and history pooling ---------------------------------------------------------
def _catalogue_rows(examples_root: str) -> list:
    """(is_cold_start, first-seen days) of every raw catalogue example."""
    rows = []
    pattern = os.path.join(examples_root, "Split-catalog", "*")
    for path in sorted(tf.io.gfile.glob(pattern)):
        compression = "GZIP" if path.endswith(".gz") else ""
        for record in tf.data.TFRecordDataset(path, compression_type=compression):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            rows.append((feature["is_cold_start"].int64_list.value[0],
                         feature["item_first_seen"].int64_list.value[0] / 86_400))
    return rows


def test_sampled_negatives_are_uniform_over_the_catalogue_known_at_training(data, tmp_path):  # noqa: F811
    """Two passes' worth of draws hold every known catalogue item exactly twice (each pass
    is a permutation) and no item first seen after the train cutoff; the same seed draws
    the same sequence."""
    fn_args = test_model.make_fn_args(data["examples"], data["transform"], str(tmp_path))
    tft_output = tft.TFTransformOutput(data["transform"])
    patterns = catalog_file_patterns(fn_args.train_files)
    rows = _catalogue_rows(data["examples"])
    known_days = sorted(days for cold, days in rows if not cold)
    cold_days = [days for cold, days in rows if cold]
    assert cold_days and known_days  # the fixture has both kinds

    def draws(seed: int) -> dict:
        batches, size = build_sampled_negatives(patterns, fn_args.data_accessor,
                                                        tft_output, 7, seed)
        assert size == len(known_days)
        first = next(iter(batches))
        assert all(name.startswith("sampled_negative/") for name in first)
        assert first["sampled_negative/first_seen_days"].shape == [7]
        items = list(batches.unbatch().take(2 * size).as_numpy_iterator())
        return {name: np.stack([item[name] for item in items]) for name in items[0]}

    drawn = draws(seed=1)
    days = drawn["sampled_negative/first_seen_days"]
    # float32 days since the epoch (as the model reads them): two-minute resolution
    np.testing.assert_array_equal(np.sort(days), np.sort(np.float32(known_days * 2)))
    assert days.max() < min(cold_days)
    np.testing.assert_array_equal(draws(seed=1)["sampled_negative/item_id_xf"],
                                  drawn["sampled_negative/item_id_xf"])


def test_sampled_negatives_lose_their_ids_when_new_at_the_time_they_are_seen(data, tmp_path):  # noqa: F811
    """In training each sample is seen at a row's time; one new then (younger than
    new_item_days) is embedded without its id, as the rows of new items are."""
    fn_args = test_model.make_fn_args(data["examples"], data["transform"], str(tmp_path))
    tft_output = tft.TFTransformOutput(data["transform"])
    batches, size = build_sampled_negatives(
        catalog_file_patterns(fn_args.train_files), fn_args.data_accessor,
        tft_output, 4, seed=1)
    model_config = dataclasses.replace(test_model.TEST_MODEL_CONFIG, dropout=0.0,
                                       id_dropout=0.0, sampled_negatives=4, new_item_days=14.0)
    model = build_model(model_config, synthetic.TEST_DATA_CONFIG,
                                synthetic.TEST_TRANSFORM_CONFIG, tft_output,
                                catalogue_size=size)
    sampled = dict(next(iter(batches)))
    sampled["sampled_negative/first_seen_days"] = tf.constant([99.0, 10.0, 99.5, 50.0])
    rows = {features.EVENT_DAY_XF: tf.constant([100.0, 100.0]), **sampled}
    embedded = model.sampled_negatives(rows, training=True)["embedding"].numpy()

    items = {name[len("sampled_negative/"):]: value for name, value in sampled.items()}
    as_new = model.item_tower.encode({**items, features.ITEM_AGE_XF: tf.fill([4], 1.0)},
                                     training=True)["embedding"].numpy()
    as_old = model.item_tower.encode({**items, features.ITEM_AGE_XF: tf.fill([4], 90.0)},
                                     training=True)["embedding"].numpy()
    np.testing.assert_allclose(embedded[[0, 2]], as_new[[0, 2]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embedded[[1, 3]], as_old[[1, 3]], rtol=1e-5, atol=1e-6)
    assert not np.allclose(as_new, as_old)  # the id mattered for these items


def test_training_with_mixed_negatives_recency_pooling_no_time_of_day(
        data, tmp_path):  # noqa: F811
    """run_fn trains and exports with uniform catalogue negatives, recency-weighted history
    pooling and no hour / day-of-week context; the recency decay is a trained weight of the
    export, and the export has no hour or day tables."""
    model_root = str(tmp_path / "model")
    finish(start_training(data, model_root, {
        "train_steps": 8, "epochs": 2, "batch_size": 32, "early_stopping_patience": 0,
        "refit_full_train": False, "validation_metric": "", "sampled_negatives": 16,
        "history_pooling": "recency", "use_time_of_day": False}), model_root, timeout=900)
    history = read_history(model_root)
    assert np.all(np.isfinite(history["metrics"]["retrieval_loss"]))
    checkpoint = tf.train.load_checkpoint(
        os.path.join(model_root, "serving_model", "variables", "variables"))
    decay = [name for name in checkpoint.get_variable_to_shape_map()
             if "recency_decay" in name and name.endswith("VARIABLE_VALUE")]
    assert len(decay) == 1
    assert checkpoint.get_tensor(decay[0]) != 0.0  # initialised at 0, moved by training
    # Keras saves sub-layer variables by index, so the query tower's tables are told apart
    # by shape: [rows, id_embedding_dim] (the missing-user vector's width).
    shapes = checkpoint.get_variable_to_shape_map()
    query = {name: shape for name, shape in shapes.items()
             if name.startswith("model/query_tower/")}
    id_dim = query["model/query_tower/missing_user/.ATTRIBUTES/VARIABLE_VALUE"][0]
    table_rows = sorted(shape[0] for shape in query.values()
                        if len(shape) == 2 and shape[1] == id_dim)
    assert len(table_rows) == 2  # user and device; no hour or day-of-week table
