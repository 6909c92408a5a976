"""Tests of the model package, run_fn and the exported SavedModel.

The module fixture does what the pipeline does on a few hundred synthetic rows: Transform's
analysis over the train split (for real, Beam DirectRunner), then `run_fn` with a FnArgs and
DataAccessor built the way TFX's Trainer builds them. The exported SavedModel is then loaded
in a FRESH Python process that imports only TensorFlow (no project code, no Keras 2 switch,
no TFT), once with the TF2 loader and once in a TF1 session as TF Serving loads it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, List

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx

from hyperrec.components.trainer import export
from hyperrec.schemas import features
from hyperrec.components import trainer
from hyperrec.components.trainer.input import catalog_file_patterns
from hyperrec.components import transform
from hyperrec.components.model.freshness import FreshnessBias
from hyperrec.components.model.image_encoder import decode_png_batch
from hyperrec.components.model.retrieval import RetrievalTask
from hyperrec.components.model.text_encoder import TextEncoder
from hyperrec.components.model.towers import HistoryAttention
from hyperrec.components import config as config_lib

sys.path.insert(0, os.path.dirname(__file__))
import test_transform as synthetic  # noqa: E402  (the shared synthetic data builders)

TEST_MODEL_CONFIG = config_lib.ModelConfig(
    embedding_dim=8, id_embedding_dim=4, cnn_filters=(4, 8), text_embedding_dim=8,
    text_heads=2, text_layers=1, text_ff_dim=16, batch_size=32, epochs=2, seed=3,
    validation_days=1.5)  # the synthetic train split spans 6.7 days
SERVING_FEATURES = transform.QUERY_INPUTS + transform.ITEM_INPUTS


def make_fn_args(examples_root: str, transform_dir: str, model_root: str) -> tfx.components.FnArgs:
    """FnArgs as TFX's Trainer builds them for an Examples artifact at `examples_root`."""
    return trainer.fn_args_for(
        examples_root, transform_dir, model_root,
        {"model": dataclasses.asdict(TEST_MODEL_CONFIG),
         "data": dataclasses.asdict(synthetic.TEST_DATA_CONFIG),
         "transform": dataclasses.asdict(synthetic.TEST_TRANSFORM_CONFIG)})


def serving_example(row: Dict[str, object], drop: tuple = ()) -> bytes:
    """A SERVING tf.Example: the model's raw features only (no label, no bookkeeping)."""
    kept = {k: v for k, v in row.items() if k in SERVING_FEATURES and k not in drop}
    return synthetic.to_example(kept).SerializeToString()


# The fresh process: TensorFlow only. It runs every signature and writes the results. The
# request names signatures, inputs and outputs (from trainer/export.py / features), so the
# script spells none; tensors are {"values", "dtype"} with bytes as hex.
_SERVING_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    model_dir, request_path, result_path = sys.argv[1:4]
    request = json.load(open(request_path))
    names = request["names"]
    loaded = tf.saved_model.load(model_dir)

    def tensor(spec):
        values = spec["values"]
        if spec.get("hex"):
            values = np.vectorize(bytes.fromhex, otypes=[object])(np.asarray(values))
        return tf.constant(values, spec["dtype"])

    def call(signature, inputs):
        outputs = loaded.signatures[names[signature]](
            **{name: tensor(spec) for name, spec in inputs.items()})
        return {key: value.numpy() for key, value in outputs.items()}

    examples = request["examples"]
    score_key, examples_key = names["score"], names["examples"]

    def scores(start, stop):
        batch = dict(examples, values=examples["values"][start:stop])
        return call("serving_default", {examples_key: batch})[score_key]

    count = len(examples["values"])
    result = {"score_64": scores(0, count)}
    result["score_7"] = np.concatenate([scores(i, i + 7) for i in range(0, count, 7)])
    result["score_1"] = np.concatenate([scores(i, i + 1) for i in range(count)])
    result["score_degraded"] = call("serving_default", {examples_key: request["degraded"]})[
        score_key]

    recommended = call("recommend", request["recommend"])
    result["rec_ids"] = recommended[names["item_ids"]].astype(str)
    result["rec_scores"] = recommended[names["scores"]]
    recommended = call("recommend", request["recommend_all"])
    result["rec_all_ids"] = recommended[names["item_ids"]].astype(str)

    result["item_embeddings"] = call("embed_items", request["items"])[names["embedding"]]
    result["catalog_embeddings"] = loaded.catalog_embeddings.numpy()
    result["catalog_ids"] = loaded.catalog_item_ids.numpy().astype(str)

    # As TF Serving loads it: the TF1 SavedModel loader in a session, signature by tensor name.
    recommend_feed = {name: tensor(spec).numpy() for name, spec in request["recommend"].items()}
    with tf.compat.v1.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], model_dir)
        signature = meta_graph.signature_def[names["serving_default"]]
        result["score_tf1"] = session.run(
            signature.outputs[score_key].name,
            {signature.inputs[examples_key].name: [bytes.fromhex(e)
                                                   for e in examples["values"]]})
        signature = meta_graph.signature_def[names["recommend"]]
        result["rec_ids_tf1"] = session.run(
            signature.outputs[names["item_ids"]].name,
            {signature.inputs[name].name: value
             for name, value in recommend_feed.items()}).astype(str)

    # Every op of every graph (the main graph and all functions) is registered in a process
    # that imported TensorFlow alone: no custom-op library is needed to serve the model.
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry
    saved_model = saved_model_pb2.SavedModel()
    with open(model_dir + "/saved_model.pb", "rb") as f:
        saved_model.ParseFromString(f.read())
    ops = set()
    for meta in saved_model.meta_graphs:
        functions = {fn.signature.name for fn in meta.graph_def.library.function}
        ops |= {node.op for node in meta.graph_def.node}
        for fn in meta.graph_def.library.function:
            ops |= {node.op for node in fn.node_def}
        ops -= functions  # a call of a library function names the function, not an op
    result["ops"] = np.array(sorted(ops))
    result["unregistered_ops"] = np.array(
        sorted(op for op in ops if op_def_registry.get(op) is None), dtype=str)
    np.savez(result_path, **result)
""")


def _tensor_spec(values: List, dtype: str, hex_bytes: bool = False) -> Dict[str, object]:
    """A JSON-able tensor for the serving script."""
    return {"values": values, "dtype": dtype, "hex": hex_bytes}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_data):
    """Synthetic splits -> Transform analysis (the session's, tests/conftest.py) -> run_fn;
    returns paths and rows."""
    examples_root = str(tmp_path_factory.mktemp("examples"))
    rows = synthetic.write_examples(examples_root)
    fn_args = make_fn_args(examples_root, synthetic_data["transform"],
                           str(tmp_path_factory.mktemp("model")))
    trainer.run_fn(fn_args)
    return {"fn_args": fn_args, "rows": rows}


def _newest_time(rows) -> int:
    """The last eval event's time: every catalogue item (cold ones too) is first seen by then."""
    return max(r[features.TIMESTAMP] for r in rows["eval"])


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """Runs every signature in a fresh TensorFlow-only process; returns the results."""
    rows = trained["rows"]
    eval_rows = (rows["eval"] * 2)[:64]
    degraded_row = dict(rows["eval"][0])
    degraded_row.update({features.IMAGE: b"", features.TITLE: "", features.DESCRIPTION: ""})
    degraded = [
        serving_example(degraded_row),
        # content features absent altogether parse as "" (masked)
        serving_example(rows["eval"][1], drop=(features.IMAGE, features.TITLE,
                                               features.DESCRIPTION)),
        serving_example({**rows["eval"][2], features.HISTORY: []}),
    ]
    users = [r for r in rows["eval"] if r[features.HISTORY]][:6]
    history_length = synthetic.TEST_DATA_CONFIG.history_length
    recommend = {
        features.USER_ID: [r[features.USER_ID] for r in users] + ["never_seen_user"],
        # Right-padded with "" as a client pads a batch of short histories.
        features.HISTORY: [(r[features.HISTORY] + [""] * history_length)[:history_length]
                           for r in users] + [[""] * history_length],
        features.DEVICE: [r[features.DEVICE] for r in users] + [""],
        # The unknown user asks at the newest time, when every catalogue item exists.
        features.TIMESTAMP: [r[features.TIMESTAMP] for r in users] + [_newest_time(rows)],
        features.K: [3] * len(users) + [5],
    }
    recommend_dtypes = {features.TIMESTAMP: "int64", features.K: "int32"}
    items = rows["items"][:5]
    request = {
        "names": {"serving_default": features.SERVING_DEFAULT, "recommend": features.RECOMMEND,
                  "embed_items": features.EMBED_ITEMS, "examples": features.EXAMPLES,
                  "score": features.SCORE, "item_ids": features.ITEM_IDS,
                  "scores": features.SCORES, "embedding": features.EMBEDDING},
        "examples": _tensor_spec([serving_example(r).hex() for r in eval_rows], "string",
                                 hex_bytes=True),
        "degraded": _tensor_spec([e.hex() for e in degraded], "string", hex_bytes=True),
        "recommend": {name: _tensor_spec(values, recommend_dtypes.get(name, "string"))
                      for name, values in recommend.items()},
        "recommend_all": {name: _tensor_spec(values[:1], recommend_dtypes.get(name, "string"))
                          for name, values in recommend.items()},
        "items": {
            name: (_tensor_spec([i[name].hex() for i in items], "string", hex_bytes=True)
                   if name == features.IMAGE else
                   _tensor_spec([i[name] for i in items],
                                "float32" if name == features.PRICE else "string"))
            for name in transform.ITEM_INPUTS},
    }
    request["recommend_all"][features.K]["values"] = [1000]  # more than the catalogue holds
    work = tmp_path_factory.mktemp("serving")
    request_path, result_path = work / "request.json", work / "result.npz"
    request_path.write_text(json.dumps(request))
    script = work / "serve.py"
    script.write_text(_SERVING_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    completed = subprocess.run(
        [sys.executable, str(script), trained["fn_args"].serving_model_dir, str(request_path),
         str(result_path)], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = dict(np.load(result_path))
    result["recommend"] = recommend
    return result


# ---- exported model, served from a fresh process -------------------------------------------
def test_serving_default_scores_serialized_examples(served):
    scores = served["score_64"]
    assert scores.shape == (64,)
    assert np.all(np.isfinite(scores)) and np.all((scores > 0) & (scores < 1))
    np.testing.assert_allclose(served["score_tf1"], scores, atol=1e-6)


def test_serving_graphs_use_core_tensorflow_ops_only(served):
    assert len(served["ops"]) > 20  # the walk saw the graphs
    assert served["unregistered_ops"].tolist() == []


def test_recommend_runs_in_a_tf1_session(served):
    np.testing.assert_array_equal(served["rec_ids_tf1"], served["rec_ids"])


def test_warmup_requests_replay_against_the_signatures(trained):
    """assets.extra/tf_serving_warmup_requests: PredictionLogs with PredictRequests for
    serving_default and recommend, built from real eval examples, that the model answers."""
    from tensorflow_serving.apis import prediction_log_pb2
    model_dir = trained["fn_args"].serving_model_dir
    path = os.path.join(model_dir, export.WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path)]
    requests = [log.predict_log.request for log in logs]
    by_signature = {}
    for request in requests:
        by_signature.setdefault(request.model_spec.signature_name, []).append(request)
    assert set(by_signature) == {features.SERVING_DEFAULT, features.RECOMMEND,
                                 features.RECOMMEND_EXCLUDING}
    loaded = tf.saved_model.load(model_dir)
    eval_users = {r[features.USER_ID] for r in trained["rows"]["eval"]}
    for signature, signature_requests in by_signature.items():
        sizes = []
        for request in signature_requests:
            inputs = {name: tf.constant(tf.make_ndarray(proto))
                      for name, proto in request.inputs.items()}
            outputs = loaded.signatures[signature](**inputs)
            sizes.append(next(iter(outputs.values())).shape[0])
            if signature != features.SERVING_DEFAULT:
                users = {u.decode() for u in inputs[features.USER_ID].numpy()}
                assert users <= eval_users  # real examples, not made-up ones
        assert sorted(sizes) == sorted(export.WARMUP_BATCH_SIZES)


def test_same_score_at_batch_sizes_1_7_64(served):
    np.testing.assert_allclose(served["score_7"], served["score_64"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(served["score_1"], served["score_64"], atol=1e-5, rtol=0)


def test_missing_image_empty_text_and_no_history_still_score(served):
    degraded = served["score_degraded"]
    assert degraded.shape == (3,) and np.all(np.isfinite(degraded))


def test_recommend_top_k_from_catalogue_excluding_history(served, trained):
    request = served["recommend"]
    catalogue = {item[features.ITEM_ID] for item in trained["rows"]["items"]}
    ids, scores = served["rec_ids"], served["rec_scores"]
    assert ids.shape == (len(request[features.USER_ID]), max(request[features.K]))
    assert np.all(np.isfinite(scores))
    for row_ids, row_scores, history in zip(ids, scores, request[features.HISTORY]):
        assert set(row_ids) <= catalogue
        assert not set(row_ids) & set(history)
        assert len(set(row_ids)) == len(row_ids)
        assert np.all(np.diff(row_scores) <= 1e-6)  # best first


def test_recommend_caps_k_at_catalogue_and_never_returns_history(served, trained):
    history = {h for h in served["recommend"][features.HISTORY][0] if h}
    ids = served["rec_all_ids"][0]
    assert ids.shape == (synthetic.NUM_ITEMS,)
    returned = [i for i in ids if i]
    assert len(returned) == synthetic.NUM_ITEMS - len(history)
    assert not set(returned) & history
    assert list(ids[len(returned):]) == [""] * len(history)  # unfillable slots last


@pytest.fixture(scope="module")
def model_server(trained, tmp_path_factory):
    """The real REST + gRPC server (serving/) on the exported model, version 1."""
    import shutil
    from hyperrec.serving.server import ModelServer, options_from_flags
    base = tmp_path_factory.mktemp("served") / "hyperrec"
    shutil.copytree(trained["fn_args"].serving_model_dir, base / "1")
    options = options_from_flags("hyperrec", str(base), None, grpc_port=0, rest_port=0,
                                 poll_seconds=0)
    with ModelServer(options) as running:
        yield running


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
def test_recommend_excluding_drops_any_number_of_items_over_rest_and_grpc(
        model_server, trained, use_grpc):
    from hyperrec.serving import client
    serving_client = (client.GrpcClient(port=model_server.grpc_port) if use_grpc
                      else client.RestClient(port=model_server.rest_port))
    catalogue = [item[features.ITEM_ID] for item in trained["rows"]["items"]]
    query = dict(user_id=trained["rows"]["eval"][0][features.USER_ID], history=[catalogue[0]],
                 device="web", timestamp=1700000000, k=len(catalogue))
    try:
        plain = [i for i, _ in serving_client.recommend(**query)]
        # Everything the plain answer ranks first but its last two (more items than any
        # history holds) is excluded: exactly those two remain, in the same order.
        excluded = [i for i in plain if i][:-2]
        assert len(excluded) > synthetic.TEST_DATA_CONFIG.history_length
        kept = [i for i, _ in serving_client.recommend(**query, exclude_item_ids=excluded)]
        assert [i for i in kept if i] == [i for i in plain if i][-2:]
        # [] (sent as one "" padding id) and unknown ids exclude nothing.
        assert [i for i, _ in serving_client.recommend(**query, exclude_item_ids=[])] == plain
        assert [i for i, _ in serving_client.recommend(
            **query, exclude_item_ids=["not-an-item", ""])] == plain
    finally:
        serving_client.close()


def test_recommend_excluding_rows_and_a_mismatched_batch(model_server, trained):
    """Each row excludes its own items (padded with ""); exclusions for a different number
    of rows are a client error (400 with TF Serving's error body)."""
    from hyperrec.serving import client
    rest = client.RestClient(port=model_server.rest_port)
    catalogue = [item[features.ITEM_ID] for item in trained["rows"]["items"]]
    rows = {features.USER_ID: ["a", "b"], features.HISTORY: [[""], [""]],
            features.DEVICE: ["", ""],
            features.TIMESTAMP: [_newest_time(trained["rows"])] * 2,
            features.K: [len(catalogue)] * 2}
    try:
        answer = rest.predict(None, inputs={
            **rows, features.EXCLUDE_ITEM_IDS: [catalogue[:3], [catalogue[3], "", ""]]},
            signature_name=features.RECOMMEND_EXCLUDING)
        first, second = (set(ids) - {""} for ids in answer["outputs"][features.ITEM_IDS])
        assert first == set(catalogue[3:]) and second == set(catalogue) - {catalogue[3]}
        with pytest.raises(client.ServingClientError) as raised:
            rest.predict(None, inputs={**rows, features.EXCLUDE_ITEM_IDS: [[catalogue[0]]]},
                         signature_name=features.RECOMMEND_EXCLUDING)
        assert raised.value.code == 400 and features.EXCLUDE_ITEM_IDS in raised.value.message
    finally:
        rest.close()


def test_recommend_never_returns_an_item_first_seen_after_the_request(trained):
    """The cold items are first seen at the train/eval boundary: a request an hour before it
    gets the warm items only, a request at it every item (float32 days resolve ~3 minutes)."""
    items = trained["rows"]["items"]
    launch = min(i[features.FIRST_SEEN] for i in items if i[features.COLD_START])
    cold = {i[features.ITEM_ID] for i in items if i[features.FIRST_SEEN] >= launch}
    assert 0 < len(cold) < len(items)
    recommend = tf.saved_model.load(
        trained["fn_args"].serving_model_dir).signatures[features.RECOMMEND]

    def returned(timestamp: int) -> set:
        ids = recommend(**{
            features.USER_ID: tf.constant(["user_00"]), features.HISTORY: tf.constant([[""]]),
            features.DEVICE: tf.constant(["mobile"]),
            features.TIMESTAMP: tf.constant([timestamp], tf.int64),
            features.K: tf.constant([len(items)], tf.int32)})[features.ITEM_IDS]
        return {i.decode() for i in ids.numpy()[0] if i}

    assert returned(launch - 3600) == {i[features.ITEM_ID] for i in items} - cold
    assert returned(launch) == {i[features.ITEM_ID] for i in items}


def test_embed_items_shapes_and_catalogue_consistency(served, trained):
    embeddings = served["item_embeddings"]
    assert embeddings.shape == (5, TEST_MODEL_CONFIG.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    catalogue = served["catalog_embeddings"]
    assert catalogue.shape == (synthetic.NUM_ITEMS, TEST_MODEL_CONFIG.embedding_dim)
    assert list(served["catalog_ids"]) == [i[features.ITEM_ID]
                                          for i in trained["rows"]["items"]]
    # The same raw item features give the same vector online and in the exported catalogue.
    np.testing.assert_allclose(embeddings, catalogue[:5], atol=1e-5)


def test_training_wrote_tensorboard_logs(trained):
    run_dir = trained["fn_args"].model_run_dir
    logged = [os.path.join(d, f) for d, _, files in os.walk(run_dir) for f in files]
    assert any("train" in p for p in logged) and any("validation" in p for p in logged)


def test_catalog_file_patterns_are_the_sibling_split():
    assert catalog_file_patterns(["/a/Examples/7/Split-train/*"]) == [
        "/a/Examples/7/Split-catalog/*"]


# ---- building blocks -------------------------------------------------------------------------
def test_retrieval_loss_matches_hand_computation_with_log_q():
    log_q = np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    task = RetrievalTask(temperature=0.5, item_log_q=log_q)
    queries = tf.math.l2_normalize(tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), axis=1)
    items = tf.math.l2_normalize(tf.constant([[1.0, 0.2], [0.3, 1.0], [1.0, -1.0]]), axis=1)
    item_ids = tf.constant([1, 2, 3], tf.int64)
    labels = tf.constant([1, 1, 0], tf.int64)  # the third row is an impression: not used
    loss = task(queries, items, item_ids, labels).numpy()

    q, c = queries.numpy()[:2], items.numpy()[:2]
    logits = q @ c.T / 0.5 - log_q[[1, 2]][None, :]
    expected = np.mean([np.log(np.exp(logits[r]).sum()) - logits[r, r] for r in range(2)])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_retrieval_masks_repeated_items_and_guards_no_positives():
    task = RetrievalTask(temperature=1.0, item_vocab_size=4)
    embeddings = tf.math.l2_normalize(tf.random.stateless_normal([3, 4], seed=[1, 2]), axis=1)
    same_item = tf.constant([2, 2, 2], tf.int64)
    # All positives are the same item: no negatives remain, so the loss is exactly 0.
    np.testing.assert_allclose(task(embeddings, embeddings, same_item,
                                    tf.constant([1, 1, 1])).numpy(), 0.0, atol=1e-6)
    no_positive = task(embeddings, embeddings, same_item, tf.constant([0, 0, 0]))
    assert no_positive.numpy() == 0.0


def test_retrieval_with_uniform_samples_matches_hand_computation():
    """Two positives (items 1, 2) and three uniform samples from a catalogue of 4 items
    (items 3, 1, 0): each candidate's logit loses log(B * Q(item) + M / N) with B = 2, M = 3,
    N = 4; the sample that is row 0's own item (1) is no negative of row 0."""
    log_q = np.log(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    task = RetrievalTask(temperature=0.5, item_log_q=log_q, catalogue_size=4)
    queries = tf.math.l2_normalize(tf.constant([[1.0, 0.0], [0.0, 1.0]]), axis=1)
    items = tf.math.l2_normalize(tf.constant([[1.0, 0.2], [0.3, 1.0]]), axis=1)
    sampled_items = tf.math.l2_normalize(tf.constant([[1.0, 1.0], [-1.0, 0.5], [0.2, -1.0]]),
                                         axis=1)
    sampled_bias = np.array([0.3, -0.2, 0.0], np.float32)
    loss = task(queries, items, tf.constant([1, 2], tf.int64), tf.constant([1, 1]),
                sampled={"embedding": sampled_items, "ids": tf.constant([3, 1, 0], tf.int64),
                         "bias": tf.constant(sampled_bias),
                         "first_seen_days": tf.zeros([3])}).numpy()

    expected_count = 2 * np.exp(log_q) + 3 / 4
    candidates = np.concatenate([items.numpy(), sampled_items.numpy()])
    ids = np.array([1, 2, 3, 1, 0])
    logits = (queries.numpy() @ candidates.T / 0.5 + np.r_[0, 0, sampled_bias][None, :]
              - np.log(expected_count[ids])[None, :])
    available = np.array([[True, True, True, False, True], [True] * 5])
    expected = np.mean([np.log(np.exp(logits[r][available[r]]).sum()) - logits[r, r]
                        for r in range(2)])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="catalogue_size"):
        RetrievalTask(temperature=0.5, item_log_q=log_q)(
            queries, items, tf.constant([1, 2], tf.int64), tf.constant([1, 1]),
            sampled={"embedding": sampled_items, "ids": tf.constant([3, 1, 0], tf.int64),
                     "bias": tf.constant(sampled_bias), "first_seen_days": tf.zeros([3])})


def test_retrieval_masks_uniform_samples_not_yet_in_the_shop():
    """With the freshness term, a sample first seen after the query's day is masked like an
    unreleased in-batch item."""
    freshness = FreshnessBias([2])
    task = RetrievalTask(temperature=1.0, item_vocab_size=4, catalogue_size=4)
    queries = tf.math.l2_normalize(tf.constant([[1.0, 0.0]]), axis=1)
    items = tf.math.l2_normalize(tf.constant([[1.0, 0.2]]), axis=1)
    sampled = {"embedding": tf.math.l2_normalize(tf.constant([[0.0, 1.0], [1.0, 1.0]]), axis=1),
               "ids": tf.constant([2, 3], tf.int64), "bias": tf.zeros([2]),
               "first_seen_days": tf.constant([5.0, 30.0])}
    loss = task(queries, items, tf.constant([1], tf.int64), tf.constant([1]),
                freshness=freshness, query_days=tf.constant([10.0]),
                item_first_seen_days=tf.constant([1.0]), sampled=sampled).numpy()
    # log Q is uniform (zeros) and the freshness logits are 0: plain cosines, item 3 masked.
    logits = queries.numpy() @ np.concatenate([items.numpy(), sampled["embedding"].numpy()]).T
    expected = np.log(np.exp(logits[0, :2]).sum()) - logits[0, 0]
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_history_weights_mean_and_recency():
    """Right-padded histories, most recent last: [a, b, c, 0] and [d, OOV, 0, 0]."""
    from hyperrec.components.model.towers import history_weights
    ids = tf.constant([[5, 6, 7, 0], [5, 9, 0, 0], [0, 0, 0, 0]])
    known = tf.constant([[True, True, True, False], [True, False, False, False],
                         [False] * 4])
    np.testing.assert_allclose(history_weights(ids, known).numpy(),
                               [[1 / 3, 1 / 3, 1 / 3, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    decay = np.log(2.0)  # each step back halves the weight
    recency = history_weights(ids, known, tf.constant(decay, tf.float32)).numpy()
    np.testing.assert_allclose(recency[0], np.array([1, 2, 4, 0]) / 7, rtol=1e-6)
    # The OOV item is the most recent (rank 0) and weighs nothing; item 5 has rank 1.
    np.testing.assert_allclose(recency[1], [1, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(recency[2], 0.0)


def _small_item_tower(**overrides: Any):
    """An 8-d item tower over a 10-item vocabulary: the id table the query towers share."""
    from hyperrec.components.model.towers import ItemTower
    return ItemTower(**{**dict(embedding_dim=8, id_embedding_dim=4, item_vocab_size=10,
                               category_vocab_size=5, text_vocab_size=20, text_max_tokens=6,
                               image_size=8, cnn_filters=(4, 8), text_embedding_dim=8,
                               text_heads=2, text_layers=1, text_ff_dim=8, dropout=0.0),
                        **overrides})


def test_query_tower_pools_history_by_attention_mean_or_recency():
    from hyperrec.components.model.towers import QueryTower
    item_tower = _small_item_tower()
    inputs = {features.USER_ID_XF: tf.constant([[1], [2]]),
              features.DEVICE_XF: tf.constant([[1], [1]]),
              features.HOUR_XF: tf.constant([[3], [4]]),
              features.DAY_OF_WEEK_XF: tf.constant([[0], [6]]),
              features.HISTORY_XF: tf.constant([[1, 2, 3], [4, 0, 0]])}
    towers = {mode: QueryTower(embedding_dim=8, id_embedding_dim=4, user_vocab_size=7,
                               device_vocab_size=3,
                               item_id_embedding=item_tower.item_id_embedding, dropout=0.0,
                               history_pooling=mode)
              for mode in ("attention", "mean", "recency")}
    assert towers["attention"].history_attention is not None
    assert towers["mean"].history_attention is None and towers["mean"].recency_decay_raw is None
    for tower in towers.values():
        embedding = tower(inputs).numpy()
        np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
    assert [w.name for w in towers["recency"].trainable_weights if "recency" in w.name]
    assert not [w.name for w in towers["mean"].weights if "attention" in w.name]
    with pytest.raises(ValueError, match="history_pooling"):
        QueryTower(embedding_dim=8, id_embedding_dim=4, user_vocab_size=7, device_vocab_size=3,
                   item_id_embedding=item_tower.item_id_embedding, dropout=0.0,
                   history_pooling="max")


def test_query_tower_time_of_day_switch():
    """With use_time_of_day the request's hour and day of week move the query embedding;
    without it the tower has no hour/day tables and the same user, device and history give
    the same embedding at any hour and day."""
    from hyperrec.components.model.towers import QueryTower
    item_tower = _small_item_tower()
    base = {features.USER_ID_XF: tf.constant([[1], [1]]),
            features.DEVICE_XF: tf.constant([[1], [1]]),
            features.HISTORY_XF: tf.constant([[1, 2, 3], [1, 2, 3]])}
    # Row 0 and row 1 differ only in the hour and the day of week.
    inputs = {**base, features.HOUR_XF: tf.constant([[3], [20]]),
              features.DAY_OF_WEEK_XF: tf.constant([[0], [5]])}
    for use_time_of_day in (True, False):
        tower = QueryTower(embedding_dim=8, id_embedding_dim=4, user_vocab_size=7,
                           device_vocab_size=3, item_id_embedding=item_tower.item_id_embedding,
                           dropout=0.0, use_time_of_day=use_time_of_day)
        embedding = tower(inputs).numpy()
        time_tables = [w.name for w in tower.weights
                       if "hour_embedding" in w.name or "day_of_week_embedding" in w.name]
        if use_time_of_day:
            assert len(time_tables) == 2
            assert not np.allclose(embedding[0], embedding[1], atol=1e-4)
        else:
            assert time_tables == []
            np.testing.assert_allclose(embedding[0], embedding[1], rtol=1e-6)


def test_freshness_buckets_ages_and_gives_a_future_item_no_bonus():
    freshness = FreshnessBias([1, 7])
    freshness.bucket_logits.assign([2.0, 1.0, -1.0])  # < 1 day, 1..7 days, >= 7 days
    ages = tf.constant([[-3.0, 0.0, 0.99], [1.0, 6.5, 30.0]])
    # Age -3: first seen after the request, not "brand new": no freshness logit at all.
    np.testing.assert_allclose(freshness(ages).numpy(), [[0.0, 2.0, 2.0], [1.0, 1.0, -1.0]])
    with pytest.raises(ValueError, match="increasing"):
        FreshnessBias([7, 1])


def test_retrieval_adds_freshness_at_the_query_time_and_masks_unreleased_items():
    """Three positives at days 10, 12 and 20; items first seen on days 9, 11 and 19. Query 0
    (day 10) cannot have item 1 (day 11) or item 2 (day 19) as negatives; query 1 (day 12)
    sees item 0 aged 3 days and item 1 aged 1 day; query 2 sees all."""
    freshness = FreshnessBias([2])
    freshness.bucket_logits.assign([1.5, -0.5])  # < 2 days old: +1.5, older: -0.5
    task = RetrievalTask(temperature=1.0, item_vocab_size=4)
    queries = tf.math.l2_normalize(tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), axis=1)
    items = tf.math.l2_normalize(tf.constant([[1.0, 0.2], [0.3, 1.0], [1.0, -1.0]]), axis=1)
    days = np.array([10.0, 12.0, 20.0], np.float32)
    first_seen = np.array([9.0, 11.0, 19.0], np.float32)
    loss = task(queries, items, tf.constant([1, 2, 3], tf.int64), tf.constant([1, 1, 1]),
                freshness=freshness, query_days=tf.constant(days),
                item_first_seen_days=tf.constant(first_seen)).numpy()

    logits = queries.numpy() @ items.numpy().T
    age = days[:, None] - first_seen[None, :]
    logits += np.where(age < 2, 1.5, -0.5)
    available = (age >= 0) | np.eye(3, dtype=bool)
    expected = np.mean([np.log(np.exp(logits[r][available[r]]).sum()) - logits[r, r]
                        for r in range(3)])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert available.tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_png_decoding_masks_missing_and_corrupt_images():
    red = tf.io.encode_png(tf.fill([4, 4, 3], tf.constant(255, tf.uint8))).numpy()
    pixels, mask = decode_png_batch(tf.constant([red, b"", b"not a png"]), image_size=4)
    assert mask.numpy().tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(pixels.numpy()[0], 1.0)
    np.testing.assert_allclose(pixels.numpy()[1:], 0.0)


def test_text_encoder_masks_empty_text():
    encoder = TextEncoder(vocab_size=10, max_tokens=4, model_dim=8, num_heads=2, num_layers=1,
                          ff_dim=8, dropout=0.0)
    pooled, mask = encoder(tf.constant([[3, 4, 0, 0], [0, 0, 0, 0]], tf.int64))
    assert mask.numpy().tolist() == [1.0, 0.0]
    assert np.all(np.isfinite(pooled.numpy())) and np.all(pooled.numpy()[1] == 0)
    assert TextEncoder.from_config(encoder.get_config()).get_config() == encoder.get_config()


def test_history_attention_ignores_padding_and_survives_empty_history():
    attention = HistoryAttention(units=4)
    history = tf.random.stateless_normal([2, 3, 4], seed=[3, 4])
    context = tf.random.stateless_normal([2, 6], seed=[5, 6])
    mask = tf.constant([[True, False, False], [False, False, False]])
    pooled, has_history = attention(context, history, mask)
    np.testing.assert_allclose(pooled.numpy()[0], history.numpy()[0, 0], rtol=1e-5)
    np.testing.assert_allclose(pooled.numpy()[1], 0.0)
    assert has_history.numpy().tolist() == [1.0, 0.0]


def test_layer_configs_round_trip():
    from hyperrec.components.model.image_encoder import ImageEncoder
    from hyperrec.components.model.ranking import RankingTask
    from hyperrec.components.model.towers import QueryTower
    item_tower = _small_item_tower(dropout=0.1, use_item_id=False)
    layers = [
        item_tower,
        QueryTower(embedding_dim=8, id_embedding_dim=4, user_vocab_size=7, device_vocab_size=3,
                   item_id_embedding=item_tower.item_id_embedding, dropout=0.1),
        QueryTower(embedding_dim=8, id_embedding_dim=4, user_vocab_size=7, device_vocab_size=3,
                   item_id_embedding=item_tower.item_id_embedding, dropout=0.1,
                   history_pooling="recency", use_time_of_day=False),
        ImageEncoder((4, 8), 16), RankingTask([16], 0.1), HistoryAttention(4),
        RetrievalTask(0.1, item_vocab_size=10), FreshnessBias([1, 7, 30]),
        RetrievalTask(0.1, item_vocab_size=10, catalogue_size=40),
    ]
    for layer in layers:
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config


def test_ranking_reads_retrieval_signals_without_reshaping_retrieval():
    """The ranking head's extra inputs are each pair's retrieval cosine and the item's
    retrieval bias (hand-computed here); no ranking gradient flows back through them."""
    from hyperrec.components.model.ranking import RankingTask
    from hyperrec.components.model.two_tower import retrieval_signals
    query = {"embedding": tf.constant([[0.6, 0.8], [1.0, 0.0]])}
    item = {"embedding": tf.Variable([[0.6, 0.8], [0.0, 1.0]]),
            "bias": tf.Variable([0.25, -0.5])}
    with tf.GradientTape() as tape:
        signals = retrieval_signals(query, item)
        loss = tf.reduce_sum(signals)
    np.testing.assert_allclose(signals.numpy(), [[1.0, 0.25], [0.0, -0.5]], atol=1e-6)
    assert all(g is None for g in tape.gradient(loss, [item["embedding"], item["bias"]]))

    ranking = RankingTask([4], 0.0)
    fusion = tf.ones([2, 3])
    with_signals = ranking.score_logits(fusion, fusion, retrieval_signals=signals)
    assert with_signals.shape == (2,)
    assert ranking.logit.kernel.shape[0] == 4  # the hidden layer saw 3 * 3 + 2 inputs
    assert ranking.hidden[0].kernel.shape[0] == 3 * 3 + 2


def test_tfma_ranks_each_users_impressions_and_slices_new_and_returning_users(trained, tmp_path):
    """The pipeline's TFMA config on the exported model: per-user NDCG over the eval rows
    (query key = user id) equals a hand computation from the model's own scores, and the
    new/returning slice (the `transformed_features` signature) counts the rows whose
    history is empty / not empty."""
    import tensorflow_model_analysis as tfma
    from hyperrec.pipeline import pipeline as pipeline_lib
    eval_config = pipeline_lib.eval_config(config_lib.load("tiny"))
    for spec in eval_config.metrics_specs:  # no last blessed model here to compare with
        for metric in spec.metrics:
            del metric.per_slice_thresholds[:]
    model_dir = trained["fn_args"].serving_model_dir
    # Every synthetic eval row has a history: the first 8 lose theirs (first-time users).
    rows = [{**r, features.HISTORY: []} if i < 8 else r
            for i, r in enumerate(trained["rows"]["eval"])]
    new = 8
    split_dir = synthetic.write_split(str(tmp_path / "examples"), features.EVAL_SPLIT, rows)
    result = tfma.run_model_analysis(
        eval_shared_model=tfma.default_eval_shared_model(model_dir, eval_config=eval_config),
        eval_config=eval_config, data_location=os.path.join(split_dir, "*"),
        output_path=str(tmp_path / "tfma"))
    # {slice key: {sub key ("" or "topK:k"): {metric: value}}} of the one model output
    by_slice = {key: values[""] for key, values in result.slicing_metrics}
    segment = features.USER_SEGMENT
    assert by_slice[((segment, features.NEW_USER),)][""]["example_count"]["doubleValue"] == new
    assert (by_slice[((segment, features.RETURNING_USER),)][""]["example_count"]["doubleValue"]
            == len(rows) - new)

    scores = tf.saved_model.load(model_dir).signatures[features.SERVING_DEFAULT](
        **{features.EXAMPLES: tf.constant([serving_example(r) for r in rows])}
    )[features.SCORE].numpy()
    by_user: Dict[str, list] = {}
    for row, score in zip(rows, scores):
        by_user.setdefault(row[features.USER_ID], []).append((score, row[features.LABEL]))
    for k in pipeline_lib.NDCG_TOP_K:
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        values = []
        for pairs in by_user.values():
            gains = np.array([g for _, g in sorted(pairs, key=lambda p: -p[0])], float)[:k]
            ideal = np.sort([g for _, g in pairs])[::-1][:k].astype(float)
            if ideal.sum() > 0:  # a user without a positive is not a ranking query
                values.append((gains * discount[:len(gains)]).sum()
                              / (ideal * discount[:len(ideal)]).sum())
        logged = by_slice[()][f"topK:{k}"]["ndcg"]["doubleValue"]
        np.testing.assert_allclose(logged, np.mean(values), rtol=1e-5)
