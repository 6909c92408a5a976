"""Ranking with a SavedModel's recommend signature: the user's WHOLE train history is
excluded whether or not the model can be told about it (a small real SavedModel)."""
from __future__ import annotations

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)

import numpy as np
import pytest
import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.components.evaluation import model_ranking, protocol

CATALOGUE = ["a", "b", "c", "d", "e", "f"]


class FixedOrder(tf.Module):
    """Scores a > b > ... > f for everyone; `recommend` drops the history items (as the
    exported model does); `recommend_excluding`, when built, ranks in REVERSE and drops
    exclude_item_ids, so a test can tell which signature answered."""

    def __init__(self):
        super().__init__()
        self.ids = tf.constant(CATALOGUE)
        self.scores = tf.constant([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])

    def _top(self, scores, dropped, k):
        hit = tf.reduce_any(self.ids[tf.newaxis, :, tf.newaxis] == dropped[:, tf.newaxis, :], 2)
        scores = tf.where(hit, -1e9, scores[tf.newaxis, :] + tf.zeros_like(hit, tf.float32))
        top = tf.math.top_k(scores, k=tf.minimum(tf.reduce_max(k), len(CATALOGUE)))
        ids = tf.where(top.values <= -1e9, "", tf.gather(self.ids, top.indices))
        return {features.ITEM_IDS: ids, features.SCORES: top.values}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID),
                                  tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
                                  tf.TensorSpec([None], tf.string, name=features.DEVICE),
                                  tf.TensorSpec([None], tf.int64, name=features.TIMESTAMP),
                                  tf.TensorSpec([None], tf.int32, name=features.K)])
    def recommend(self, user_id, history_item_ids, device, timestamp, k):
        return self._top(self.scores, history_item_ids, k)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.USER_ID),
                                  tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
                                  tf.TensorSpec([None], tf.string, name=features.DEVICE),
                                  tf.TensorSpec([None], tf.int64, name=features.TIMESTAMP),
                                  tf.TensorSpec([None], tf.int32, name=features.K),
                                  tf.TensorSpec([None, None], tf.string,
                                                name=model_ranking.EXCLUDE_ITEM_IDS)])
    def recommend_excluding(self, user_id, history_item_ids, device, timestamp, k,
                            exclude_item_ids):
        return self._top(-self.scores, exclude_item_ids, k)


def _task():
    catalogue = protocol.Catalogue(np.array(CATALOGUE, object), np.zeros(6, bool))
    # u1 had a, b, c in train but the model's history feature (length 1) holds only c.
    return protocol.Task(catalogue=catalogue, cutoff=100, users=["u1", "u2"],
                         excluded=[np.array([0, 1, 2]), np.array([], np.int64)],
                         history=[["c"], []], devices=["mobile", "desktop"],
                         targets=[np.array([3]), np.array([0])], new_user=np.zeros(2, bool),
                         popularity=np.zeros(6), train=None)


def test_whole_history_is_excluded_with_the_plain_recommend_signature(tmp_path):
    module = FixedOrder()
    tf.saved_model.save(module, str(tmp_path), signatures={features.RECOMMEND: module.recommend})
    ranked = model_ranking.rank_with_model(str(tmp_path), _task(), depth=2, history_length=1)
    # Asking for k=2 alone would give a, b (only c is in the history it is told about).
    np.testing.assert_array_equal(ranked, [[3, 4], [0, 1]])  # d, e / a, b


def test_the_excluding_signature_is_used_when_the_model_has_it(tmp_path):
    module = FixedOrder()
    tf.saved_model.save(module, str(tmp_path), signatures={
        features.RECOMMEND: module.recommend,
        model_ranking.RECOMMEND_EXCLUDING: module.recommend_excluding})
    ranked = model_ranking.rank_with_model(str(tmp_path), _task(), depth=3, history_length=1)
    np.testing.assert_array_equal(ranked, [[5, 4, 3], [5, 4, 3]])  # reverse order: f, e, d


def test_queries_carry_the_cutoff_or_each_users_first_eval_event_time():
    task = _task()
    task.first_eval_times = np.array([130, 105], np.int64)
    sent = []

    def recommend(request):
        sent.append(request[features.TIMESTAMP].numpy().tolist())
        return {features.ITEM_IDS: tf.constant([["d", "e"], ["a", "b"]])}

    for query_time in ("cutoff", "first_eval_event"):
        ranked = model_ranking.rank_task(recommend, task, depth=2, query_time=query_time)
        np.testing.assert_array_equal(ranked, [[3, 4], [0, 1]])
    assert sent == [[100, 100], [130, 105]]
    task.first_eval_times = None  # a task built by hand without them
    with pytest.raises(ValueError, match="no eval event times"):
        model_ranking.rank_task(recommend, task, depth=2, query_time="first_eval_event")
