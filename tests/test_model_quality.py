"""Model quality on the generator's held-out period, measured on `tiny` sample data.

The real pipeline (LocalDagRunner) runs on `tiny` data (seed 7); its Trainer's model is then
evaluated on the eval split, the last `eval_days` of the timeline, which the model never
saw, through the exported `recommend` signature (full catalogue, history excluded, as it
serves). An id-only variant (no content, `use_content=False`) is trained by `run_fn` on the
same artifacts for the cold-start comparison.

- Retrieval: recall@10 over the eval positives (engaged events whose item is not already in
  the user's history, which `recommend` excludes by design) against a popularity baseline
  (the train period's most engaged items, minus the user's history).
- Cold start: items first seen after the train cutoff have no interactions in training.
  Each eval user's catalogue scores are compared with the generator's ground truth
  (ground_truth.json): is each cold item recommended to the users who prefer its colour or
  category rather than to the others? AUC per cold item, averaged; chance is 0.5, and an
  id-only model is exactly at chance (every cold item is the same unknown id).

Measured values are printed (`pytest -s`) and summarised in the assertion messages.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
from typing import Dict, List

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)

import numpy as np
import pytest
import tensorflow as tf

from hyperrec.data import synthetic as datagen
from hyperrec.schemas import features
from hyperrec.components import trainer
from hyperrec.components.model.diagnostics import EXCLUDED_FLOOR
from hyperrec.components import config as config_lib
from hyperrec.pipeline.runners import local as local_runner

import test_model

pytestmark = pytest.mark.e2e

DATA_SEED = 7
# The tiny experiment trains 3 epochs to keep the pipeline test fast; on the ~600 train
# positives retrieval is then only just above popularity (measured recall@10 0.252 vs
# 0.239). Six epochs are what the model needs on this data (measured below).
OVERRIDES = ["model.epochs=6"]
K = 10


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Dict[str, object]:
    data_root = str(tmp_path_factory.mktemp("data"))
    datagen.generate("tiny", DATA_SEED, data_root)
    config = config_lib.load("tiny", OVERRIDES)
    paths = local_runner.run(config, data_root, str(tmp_path_factory.mktemp("run")))
    root = paths.pipeline_root
    examples = _latest(os.path.join(root, "FileBasedExampleGen", "examples"))
    transform_graph = _latest(os.path.join(root, "Transform", "transform_graph"))
    model_dir = os.path.join(_latest(os.path.join(root, "Trainer", "model")), "Format-Serving")

    # The id-only variant on the same examples and transform graph.
    # Without content, and without the item-only time terms (an item's age and recent
    # popularity score it alike for every user): the towers alone must tell cold items apart.
    id_only = dataclasses.replace(config.model, use_content=False, freshness_days=(),
                                  recent_popularity_counts=())
    fn_args = test_model.make_fn_args(examples, transform_graph,
                                      str(tmp_path_factory.mktemp("id_only")))
    fn_args.custom_config = {"model": dataclasses.asdict(id_only),
                             "data": dataclasses.asdict(config.data),
                             "transform": dataclasses.asdict(config.transform)}
    trainer.run_fn(fn_args)

    with open(os.path.join(data_root, "ground_truth.json")) as f:
        truth = json.load(f)
    return {"examples": examples, "model": model_dir, "id_only": fn_args.serving_model_dir,
            "truth": truth, "history_length": config.data.history_length}


def _latest(parent: str) -> str:
    return max(glob.glob(os.path.join(parent, "*")), key=lambda p: int(os.path.basename(p)))


def _rows(examples: str, split: str) -> List[Dict[str, object]]:
    """The split's examples as dicts of the fields the evaluation reads."""
    files = glob.glob(os.path.join(examples, f"Split-{split}", "*"))
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature

        def text(name: str) -> str:
            values = feature[name].bytes_list.value
            return values[0].decode() if values else ""

        row = {"item": text(features.ITEM_ID),
               "cold": feature[features.COLD_START].int64_list.value[0]}
        if split != features.CATALOG_SPLIT:
            row.update(user=text(features.USER_ID), device=text(features.DEVICE),
                       timestamp=feature[features.TIMESTAMP].int64_list.value[0],
                       label=feature[features.LABEL].int64_list.value[0],
                       history=[h.decode() for h in
                                feature[features.HISTORY].bytes_list.value])
        rows.append(row)
    return rows


def _rank_catalogue(model_dir: str, queries: List[Dict[str, object]], history_length: int,
                    catalogue_size: int):
    """`recommend` for every query with k = the whole catalogue: (ids, scores) [Q, C]."""
    recommend = tf.saved_model.load(model_dir).signatures["recommend"]
    outputs = recommend(
        user_id=tf.constant([q["user"] for q in queries]),
        history_item_ids=tf.constant([(q["history"] + [""] * history_length)[:history_length]
                                      for q in queries]),
        device=tf.constant([q["device"] for q in queries]),
        timestamp=tf.constant([q["timestamp"] for q in queries], tf.int64),
        k=tf.constant([catalogue_size] * len(queries), tf.int32))
    return outputs["item_ids"].numpy().astype(str), outputs["scores"].numpy()


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counting half."""
    greater = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * ties)


def _cold_start_aucs(model_dir: str, run: Dict[str, object]) -> Dict[str, np.ndarray]:
    """Per cold item: AUC of its score for the users who prefer its colour / category /
    either, against the other users. A user's query is their last eval event; an item the
    user already has in their history is left out for that user (recommend excludes it).

    Scores are centred per user (minus the mean score of that user's cold items), so the
    AUC measures which cold items each user is recommended relative to the others, not
    which users get high scores for everything new. An id-only model scores all cold items
    alike for each user: centred scores are all 0 and every AUC is exactly 0.5.
    """
    truth = run["truth"]
    catalogue = _rows(run["examples"], features.CATALOG_SPLIT)
    cold = {row["item"] for row in catalogue if row["cold"]}
    last = {}
    for row in _rows(run["examples"], features.EVAL_SPLIT):
        last[row["user"]] = row
    users = sorted(u for u in last if u in truth["users"])
    ids, scores = _rank_catalogue(model_dir, [last[u] for u in users], run["history_length"],
                                  len(catalogue))
    centred: Dict[str, Dict[str, float]] = collections.defaultdict(dict)
    for user, row_ids, row_scores in zip(users, ids, scores):
        seen = set(last[user]["history"])
        # An item launched after the query is no candidate (recommend masks it).
        candidates = [(i, s) for i, s in zip(row_ids, row_scores)
                      if i in cold and i not in seen and s > EXCLUDED_FLOOR]
        mean = np.mean([s for _, s in candidates])
        for item, score in candidates:
            # Rounded: identical scores must centre to exactly 0, not to float noise.
            centred[item][user] = round(float(score - mean), 6)
    aucs = collections.defaultdict(list)
    for item, by_user in centred.items():
        attributes = truth["items"][item]
        tastes = [truth["users"][u] for u in by_user]
        item_scores = np.array(list(by_user.values()))
        labels = {
            "colour": np.array([attributes["colour"] in t["fav_colours"] for t in tastes]),
            "category": np.array([attributes["category"] in t["fav_categories"]
                                  for t in tastes])}
        labels["colour or category"] = labels["colour"] | labels["category"]
        for name, liked in labels.items():
            if liked.any() and (~liked).any():
                aucs[name].append(_auc(item_scores[liked], item_scores[~liked]))
    return {name: np.array(values) for name, values in aucs.items()}


def test_recall_at_10_beats_popularity(run):
    train = _rows(run["examples"], features.TRAIN_SPLIT)
    catalogue_size = len(_rows(run["examples"], features.CATALOG_SPLIT))
    positives = [r for r in _rows(run["examples"], features.EVAL_SPLIT)
                 if r["label"] == 1 and r["item"] not in r["history"]]
    popular = [item for item, _ in collections.Counter(
        r["item"] for r in train if r["label"] == 1).most_common()]
    ids, _ = _rank_catalogue(run["model"], positives, run["history_length"], catalogue_size)
    model_hits = sum(r["item"] in row[:K] for r, row in zip(positives, ids))
    popularity_hits = sum(r["item"] in [i for i in popular if i not in r["history"]][:K]
                          for r in positives)
    recall, baseline = model_hits / len(positives), popularity_hits / len(positives)
    print(f"\nrecall@{K} on {len(positives)} held-out positives: model {recall:.3f}, "
          f"popularity {baseline:.3f}")
    # Measured: 0.270 vs 0.239 (61 vs 54 hits of 226). The model must beat popularity on
    # the same positives: a strict comparison, no slack, since popularity is the bar a
    # recommender has to clear to be worth serving.
    assert model_hits > popularity_hits, (recall, baseline)


def test_cold_start_items_reach_users_who_prefer_their_attributes(run):
    content = _cold_start_aucs(run["model"], run)
    id_only = _cold_start_aucs(run["id_only"], run)
    for name, values in content.items():
        print(f"cold-start AUC per item ({name}, {len(values)} cold items): model "
              f"{values.mean():.3f} +- {values.std(ddof=1) / np.sqrt(len(values)):.3f}, "
              f"id-only {id_only[name].mean():.3f}, chance 0.500")
    # The id-only model cannot tell cold items apart: they are all the same unknown id.
    for name, values in id_only.items():
        np.testing.assert_allclose(values, 0.5, atol=1e-9, err_msg=name)
    # The content model recommends each cold item to the users who prefer its colour more
    # than to the others, colour being the strongest taste in the generator's choice model.
    # "Clearly above chance": the mean AUC over the cold items exceeds 0.5 by more than
    # three standard errors (measured 0.585 +- 0.025). Colour or category, diluted by
    # category (alone 0.513 +- 0.013, not asserted), by two (measured 0.539 +- 0.015 and
    # 0.541 +- 0.014 in two runs; 0.555 +- 0.011 when cold items launched after the query
    # were still ranked, which `recommend` now masks).
    for name, standard_errors in (("colour", 3), ("colour or category", 2)):
        values = content[name]
        standard_error = values.std(ddof=1) / np.sqrt(len(values))
        assert values.mean() - 0.5 > standard_errors * standard_error, (
            name, values.mean(), standard_error)


def _opposite_taste_pairs(users: List[str], truth: Dict[str, object]) -> List[tuple]:
    """Pairs of users who share no favourite category and no favourite colour."""
    tastes = {u: truth["users"][u] for u in users}
    return [(a, b) for i, a in enumerate(users) for b in users[i + 1:]
            if not set(tastes[a]["fav_categories"]) & set(tastes[b]["fav_categories"])
            and not set(tastes[a]["fav_colours"]) & set(tastes[b]["fav_colours"])]


def test_users_with_opposite_tastes_get_different_lists_that_follow_their_tastes(run):
    """Personalisation, measured against the generator's hidden tastes: users who share no
    favourite category or colour must get mostly different top-10 lists, and the lists must
    fall in the users' favourite categories and colours clearly more often than the
    most-popular list does (components/evaluation/personalisation.py)."""
    from hyperrec.components.evaluation import personalisation

    truth = run["truth"]
    catalogue = np.array([r["item"] for r in _rows(run["examples"], features.CATALOG_SPLIT)],
                         dtype=object)
    index = {item: i for i, item in enumerate(catalogue)}
    last = {}
    for row in _rows(run["examples"], features.EVAL_SPLIT):
        last[row["user"]] = row
    users = sorted(u for u in last if u in truth["users"])
    queries = [last[u] for u in users]
    ids, _ = _rank_catalogue(run["model"], queries, run["history_length"], len(catalogue))
    model = np.array([[index[i] for i in row[:K] if i] for row in ids])
    train = _rows(run["examples"], features.TRAIN_SPLIT)
    popular = [index[item] for item, _ in collections.Counter(
        r["item"] for r in train if r["label"] == 1).most_common() if item in index]
    most_popular = np.array([[i for i in popular if catalogue[i] not in q["history"]][:K]
                             for q in queries])

    row = {u: r for r, u in enumerate(users)}
    pairs = _opposite_taste_pairs(users, truth)
    distances = [1.0 - len(set(model[row[a]]) & set(model[row[b]]))
                 / len(set(model[row[a]]) | set(model[row[b]])) for a, b in pairs]
    taste = personalisation.taste_match(model, K, users, catalogue, truth)
    popular_taste = personalisation.taste_match(most_popular, K, users, catalogue, truth)
    print(f"\n{len(pairs)} opposite-taste pairs: mean Jaccard distance of their top-{K} "
          f"{np.mean(distances):.3f}; taste match category / colour: model "
          f"{taste['category']:.3f} / {taste['colour']:.3f}, most-popular "
          f"{popular_taste['category']:.3f} / {popular_taste['colour']:.3f}")
    assert len(pairs) >= 20
    assert np.mean(distances) >= MIN_OPPOSITE_JACCARD, np.mean(distances)
    assert taste["colour"] >= popular_taste["colour"] + COLOUR_MARGIN, (taste, popular_taste)


# Today's level, so that losing it fails (measured in two runs: Jaccard 0.690 and 0.655,
# colour taste 0.219 and 0.217 against most-popular's 0.165). A list collapsed onto the popular items, as `make
# demo`'s model was (coverage@10 0.09), has a Jaccard distance far below and no colour
# margin. Issue 25's targets (0.7 and a clear margin in category too: today 0.249 and 0.237
# against 0.247) are not met yet.
MIN_OPPOSITE_JACCARD = 0.6
COLOUR_MARGIN = 0.03
