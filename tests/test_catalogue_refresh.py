"""Catalogue refresh (pipeline/loop/catalogue_refresh.py): new items served with no retraining.

A model is trained in-process on the synthetic data tests/test_model.py uses (Transform's
analysis on Beam, then run_fn), where the hidden taste is known: user u engages with category
CATEGORIES[u % 4] (90 % of labels agree). Its export is pushed as version 1 and served by
the real server (serving/). Then four brand-new items, one per category, each with only an
image, text, category and price (ids the model never saw), are added by a refresh, with no
Trainer run. Over the official gRPC stub:

- the server swaps to version 2 while a client keeps asking, with no failed request;
- every old item keeps its score for the same query (same weights, same catalogue terms);
- each new item reaches the top-k of the users whose taste matches its category markedly
  more often than the top-k of the other users (ground truth), numbers printed.

Bad inputs (empty file, missing columns, duplicate ids, an id already served, a missing or
undecodable image, a bad price, no served version) are refused with a named error and no
new version.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import threading
import time

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.pipeline.loop import catalogue_refresh as refresh_lib
from hyperrec.components import pusher
from hyperrec.components import trainer

import test_model
import test_transform as synthetic

K = 5
# test_model's synthetic data at 2400 train rows instead of 320: on 320 the model ranks even
# the catalogue's own cold items at chance (measured AUC 0.19..0.75 per new item), so a
# content assertion would be noise; on 2400 it learns the tastes (warm items' AUC 0.92).
TRAIN_ROWS = 2400
# After the last synthetic event: the new items' first-seen time and the queries' time.
NOW = (synthetic.START_TIMESTAMP
       + (TRAIN_ROWS + synthetic.NUM_EVAL_ROWS) * synthetic.ROW_SPACING_SECONDS)
# No validation slice, so no selection and refit pass (one training, 6 epochs).
MODEL_CONFIG = dataclasses.replace(test_model.TEST_MODEL_CONFIG, epochs=6, validation_days=0.0,
                                   early_stopping_patience=0)
CSV_HEADER = "item_id,title,description,category,price,image,first_seen\n"
NEW_PER_CATEGORY = 3
# A cold catalogue item (never in training: an OOV id, like every new item) whose content a
# new item copies: the refresh must give it exactly the export's catalogue terms.
COLD_TWIN = synthetic.item_id(27)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """test_model's training on its synthetic data (TRAIN_ROWS rows), with MODEL_CONFIG."""
    examples_root = str(tmp_path_factory.mktemp("examples"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic, "NUM_TRAIN_ROWS", TRAIN_ROWS)
        rows = synthetic.write_examples(examples_root)
    transform_dir = str(tmp_path_factory.mktemp("transform_output"))
    synthetic.run_transform_analysis(examples_root, transform_dir, synthetic.raw_schema(),
                                     synthetic.transform_custom_config())
    fn_args = test_model.make_fn_args(examples_root, transform_dir,
                                      str(tmp_path_factory.mktemp("model")))
    fn_args.custom_config["model"] = dataclasses.asdict(MODEL_CONFIG)
    started = time.monotonic()
    trainer.run_fn(fn_args)
    return {"model_dir": fn_args.serving_model_dir, "rows": rows,
            "train_seconds": time.monotonic() - started}


def push_first_version(trained, root) -> str:
    base = os.path.join(str(root), "hyperrec")
    shutil.copytree(trained["model_dir"], os.path.join(base, "1"))
    return base


def write_png(path, colour) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(synthetic._png(colour, 40))  # not the model's size: normalised on read
    return path


def new_items_csv(root, items) -> str:
    """items: (id, title, description, category, price, image reference) per row."""
    path = os.path.join(str(root), "new_items.csv")
    with open(path, "w", newline="") as handle:
        handle.write(CSV_HEADER)
        csv.writer(handle).writerows(list(item) + ["2030-01-01T00:00:00Z"] for item in items)
    return path


def new_items(root, rows):
    """NEW_PER_CATEGORY brand-new items per category (new ids, text and prices), each shown
    in the photo of a catalogue item of its category (in this data an item's photo is one
    random colour, which training ties to the item's category; a photo of a random colour
    carries no taste: measured 0.12 vs 0.08 below), plus COLD_TWIN's content under a new id.
    """
    by_category = {c: [i for i in rows["items"][:synthetic.NUM_WARM_ITEMS]
                       if i[features.CATEGORY] == c and i[features.IMAGE]]
                   for c in synthetic.CATEGORIES}
    words = synthetic.WORDS
    items = []
    os.makedirs(os.path.join(str(root), "images"), exist_ok=True)
    for n in range(NEW_PER_CATEGORY):
        for c, category in enumerate(synthetic.CATEGORIES):
            name = f"new{n}_{category}"
            with open(os.path.join(str(root), "images", f"{name}.png"), "wb") as handle:
                handle.write(by_category[category][n][features.IMAGE])
            w = [words[(4 * n + c + k) % len(words)] for k in range(3)]
            items.append((name, f"{w[0].title()} {category}!", f"{w[1]}, {w[2]}-style.",
                          category, 40.0 + 30 * n + 7 * c, f"images/{name}.png"))
    twin = next(i for i in rows["items"] if i[features.ITEM_ID] == COLD_TWIN)
    with open(os.path.join(str(root), "images", "twin.png"), "wb") as handle:
        handle.write(twin[features.IMAGE])
    items.append(("new_twin", twin[features.TITLE], twin[features.DESCRIPTION],
                  twin[features.CATEGORY], twin[features.PRICE], "twin.png"))
    return items


def query_tensors(users, k):
    """`recommend` inputs for each (user id, history) at NOW + 1 h."""
    length = synthetic.TEST_DATA_CONFIG.history_length
    return {
        features.USER_ID: np.array([u for u, _ in users], object),
        features.HISTORY: np.array([(h + [""] * length)[:length] for _, h in users], object),
        features.DEVICE: np.array([synthetic.DEVICES[int(u[-2:]) % 3] for u, _ in users],
                                  object),
        features.TIMESTAMP: np.array([NOW + 3600] * len(users), np.int64),
        features.K: np.array([k] * len(users), np.int32)}


def grpc_recommend(stub, inputs):
    """(item ids [batch, k] str, scores, answering version) over PredictionService."""
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hyperrec"
    request.model_spec.signature_name = features.RECOMMEND
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = stub.Predict(request, timeout=60)
    ids = tf.make_ndarray(response.outputs[features.ITEM_IDS]).astype(str)
    return (ids, tf.make_ndarray(response.outputs[features.SCORES]),
            response.model_spec.version.value)


def test_new_items_reach_matching_users_after_a_refresh_without_retraining(
        trained, tmp_path):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    from hyperrec.serving.server import ModelServer, options_from_flags

    base = push_first_version(trained, tmp_path)
    rows = trained["rows"]
    items = new_items(tmp_path, rows)
    csv_path = new_items_csv(tmp_path, items)
    # Each user's state at the end of the data: their last eval row's history plus its item
    # when engaged (as ExampleGen would build the next row's history).
    last = {}
    for row in rows["train"] + rows["eval"]:
        history = row[features.HISTORY] + ([row[features.ITEM_ID]] if row[features.LABEL]
                                           else [])
        last[row[features.USER_ID]] = history[-synthetic.TEST_DATA_CONFIG.history_length:]
    users = sorted(last.items())
    catalogue_size = synthetic.NUM_ITEMS + len(items)

    options = options_from_flags("hyperrec", base, None, grpc_port=0, rest_port=0,
                                 poll_seconds=0.1)
    with ModelServer(options) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        before_ids, before_scores, version = grpc_recommend(
            stub, query_tensors(users, catalogue_size))
        assert version == 1

        # Traffic during the refresh and the swap: every answer must succeed.
        answers, failures, stop = [], [], threading.Event()

        def keep_asking():
            own = prediction_service_pb2_grpc.PredictionServiceStub(
                grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
            while not stop.is_set():
                try:
                    answers.append(grpc_recommend(own, query_tensors(users[:2], K))[2])
                except grpc.RpcError as err:
                    failures.append(f"{err.code().name}: {err.details()}")

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            started = time.monotonic()
            summary = refresh_lib.refresh(csv_path, os.path.join(str(tmp_path), "images"),
                                          base, now=NOW)
            refresh_seconds = time.monotonic() - started
            deadline = time.monotonic() + 120
            while not answers or answers[-1] != 2:
                assert time.monotonic() < deadline, "the server never swapped to version 2"
                time.sleep(0.1)
        finally:
            stop.set()
            asker.join()
        after_ids, after_scores, version = grpc_recommend(
            stub, query_tensors(users, catalogue_size))
        top_ids, _, _ = grpc_recommend(stub, query_tensors(users, K))
        channel.close()

    print(f"\ntraining {trained['train_seconds']:.1f} s; refresh {refresh_seconds:.1f} s "
          f"({summary}); during it {len(answers)} answers (version 1: "
          f"{answers.count(1)}, version 2: {answers.count(2)}), {len(failures)} failed")
    assert summary["new_items"] == len(items) and summary["version"] == 2 == version
    assert (summary["old_catalogue_size"], summary["new_catalogue_size"]) == (
        synthetic.NUM_ITEMS, catalogue_size)
    assert failures == [] and answers.count(1) > 0 and answers.count(2) > 0

    # Old items: the same score for the same query before and after (same weights).
    for row in range(len(users)):
        old = {i: s for i, s in zip(before_ids[row], before_scores[row]) if i}
        new = {i: s for i, s in zip(after_ids[row], after_scores[row]) if i}
        assert set(new) - set(old) == {item[0] for item in items}
        np.testing.assert_allclose([new[i] for i in old], list(old.values()), atol=1e-5)

    # The cold twin: the export's catalogue terms for the same content (both OOV ids).
    catalogue = tf.saved_model.load(os.path.join(base, "2"))
    row = {i: r for r, i in enumerate(catalogue.catalog_item_ids.numpy().astype(str))}
    for name in ("catalog_embeddings", "catalog_score_bias", "catalog_prior"):
        values = getattr(catalogue, name).numpy()
        np.testing.assert_allclose(values[row["new_twin"]], values[row[COLD_TWIN]], atol=1e-5,
                                   err_msg=name)
    assert catalogue.catalog_first_seen_days.numpy()[row["new_twin"]] == pytest.approx(
        NOW / features.SECONDS_PER_DAY)

    # New items against the ground truth: user u likes CATEGORIES[u % 4].
    matched, other = [], []
    for (user, _), ids in zip(users, top_ids):
        liked = synthetic.CATEGORIES[int(user.split("_")[1]) % len(synthetic.CATEGORIES)]
        for name, _, _, category, _, _ in items[:-1]:  # the twin is no taste test
            (matched if category == liked else other).append(name in ids)
    matched_rate, other_rate = np.mean(matched), np.mean(other)
    print(f"new item in the top-{K} of {len(users)} users: matching taste "
          f"{sum(matched)}/{len(matched)} = {matched_rate:.2f}, other users "
          f"{sum(other)}/{len(other)} = {other_rate:.2f}")
    # Measured 0.71 (34/48) vs 0.05 (7/144); chance is K / catalogue for both.
    assert matched_rate >= 0.5 and matched_rate > 3 * other_rate, (matched_rate, other_rate)


def test_the_command_pushes_a_version_that_loads_in_a_tf1_session_as_tf_serving_loads_it(
        trained, tmp_path):
    """`hyperrec refresh-catalogue`, then version 2 in a TF1 session: TF Serving restores
    variables and tables from the checkpoint, so the grown catalogue (and its id index) must
    come back from version 2's files alone."""
    from click.testing import CliRunner
    from hyperrec.pipeline import cli
    base = push_first_version(trained, tmp_path)
    csv_path = new_items_csv(tmp_path, new_items(tmp_path, trained["rows"]))
    command = ["refresh-catalogue", "--items", csv_path, "--images",
               os.path.join(str(tmp_path), "images"), "--serving-dir", str(tmp_path), "--json"]
    result = CliRunner().invoke(cli.main, command)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert (summary["version"], summary["new_items"]) == (2, NEW_PER_CATEGORY * 4 + 1)
    # The same file again: every id is served now, a named refusal and exit code 1.
    again = CliRunner().invoke(cli.main, command)
    assert again.exit_code == 1 and "ItemAlreadyInCatalogue" in again.output
    assert pusher.pushed_versions(base) == [1, 2]
    with tf.compat.v1.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, ["serve"], os.path.join(base, "2"))
        signature = meta_graph.signature_def[features.RECOMMEND]
        inputs = query_tensors([("user_00", ["new0_shoes"])], 100)
        # The command lists new items at the wall-clock time: a request dated before it
        # would not get them (recommend masks items not launched yet).
        inputs[features.TIMESTAMP] = np.array([int(time.time()) + 3600], np.int64)
        outputs = session.run(
            {name: info.name for name, info in signature.outputs.items()},
            {signature.inputs[name].name: value for name, value in inputs.items()})
    ids = [i.decode() for i in outputs[features.ITEM_IDS][0] if i]
    # Every item but the history's one, which the table finds and excludes.
    new = NEW_PER_CATEGORY * len(synthetic.CATEGORIES) + 1
    assert len(ids) == synthetic.NUM_ITEMS + new - 1 and "new0_shoes" not in ids
    assert {"new0_bags", "new_twin", synthetic.item_id(0)} <= set(ids)
    assert os.path.isfile(os.path.join(base, "2", "assets.extra",
                                       "tf_serving_warmup_requests")) == os.path.isfile(
        os.path.join(base, "1", "assets.extra", "tf_serving_warmup_requests"))


# ---- refused inputs: a named error, and no new version --------------------------------------
@pytest.fixture()
def served_base(trained, tmp_path):
    base = push_first_version(trained, tmp_path)
    write_png(os.path.join(str(tmp_path), "images", "a.png"), (200, 10, 10))
    return base


def refused(tmp_path, base, text, error):
    path = os.path.join(str(tmp_path), "bad.csv")
    with open(path, "w") as handle:
        handle.write(text)
    with pytest.raises(error) as raised:
        refresh_lib.refresh(path, os.path.join(str(tmp_path), "images"), base, now=NOW,
                            log=lambda _: None)
    assert pusher.pushed_versions(base) == [1]
    assert [n for n in os.listdir(base) if n != "1"] == []  # no staging left behind
    return str(raised.value)


def test_an_empty_file_or_a_header_alone_is_refused(served_base, tmp_path):
    assert "empty" in refused(tmp_path, served_base, "", refresh_lib.EmptyItemsFile)
    assert "no items" in refused(tmp_path, served_base, CSV_HEADER, refresh_lib.EmptyItemsFile)


def test_missing_columns_are_named(served_base, tmp_path):
    message = refused(tmp_path, served_base, "item_id,title,image\nx,X,images/a.png\n",
                      refresh_lib.MissingColumns)
    assert "description" in message and "category" in message and "price" in message


def test_duplicate_ids_in_the_file_are_refused(served_base, tmp_path):
    row = "n1,T,d,shoes,3.0,images/a.png,\n"
    assert "['n1']" in refused(tmp_path, served_base, CSV_HEADER + row + row,
                               refresh_lib.DuplicateItemIds)


def test_an_id_already_served_is_refused(served_base, tmp_path):
    text = CSV_HEADER + f"{synthetic.item_id(3)},T,d,shoes,3.0,images/a.png,\n"
    assert synthetic.item_id(3) in refused(tmp_path, served_base, text,
                                           refresh_lib.ItemAlreadyInCatalogue)


def test_a_missing_image_file_is_refused_but_an_empty_image_cell_is_legal(
        served_base, tmp_path):
    text = CSV_HEADER + "n1,T,d,shoes,3.0,images/nope.png,\n"
    assert "nope.png" in refused(tmp_path, served_base, text, refresh_lib.MissingImageFile)
    items = refresh_lib.read_new_items(new_items_csv(tmp_path, [
        ("n2", "T", "d", "shoes", 3.0, ""), ("n3", "T", "d", "bags", 4.0, "images/a.png")]),
        os.path.join(str(tmp_path), "images"), 16)
    assert items[features.IMAGE][0] == b""  # masked by the model, as in training
    decoded = tf.io.decode_png(items[features.IMAGE][1])
    assert decoded.shape == (16, 16, 3) and tuple(decoded[0, 0].numpy()) == (200, 10, 10)


def test_an_undecodable_image_is_refused(served_base, tmp_path):
    with open(os.path.join(str(tmp_path), "images", "broken.png"), "wb") as handle:
        handle.write(b"\x89PNG not really")
    text = CSV_HEADER + "n1,T,d,shoes,3.0,images/broken.png,\n"
    assert "broken.png" in refused(tmp_path, served_base, text, refresh_lib.UnreadableImage)


def test_a_row_without_id_or_price_is_refused(served_base, tmp_path):
    assert "item_missing_id" in refused(tmp_path, served_base,
                                        CSV_HEADER + ",T,d,shoes,3.0,,\n",
                                        refresh_lib.BadItemRow)
    assert "row 2: item_missing_price" in refused(
        tmp_path, served_base, CSV_HEADER + "n0,T,d,shoes,3.0,,\nn1,T,d,shoes,,,\n",
        refresh_lib.BadItemRow)


def test_no_served_version_or_no_items_file_is_refused(served_base, tmp_path):
    with pytest.raises(refresh_lib.NoServedVersion):
        refresh_lib.refresh(os.path.join(str(tmp_path), "x.csv"), str(tmp_path),
                            os.path.join(str(tmp_path), "empty_base"), log=lambda _: None)
    with pytest.raises(refresh_lib.ItemsFileNotFound):
        refresh_lib.refresh(os.path.join(str(tmp_path), "x.csv"), str(tmp_path),
                            served_base, log=lambda _: None)


def test_a_version_exported_without_replace_catalogue_is_refused(tmp_path):
    """A recommender whose catalogue is baked in (tests/standin_models.py's stand-in, as every
    export before the resizable catalogue) is named, not half-refreshed."""
    import standin_models
    base = os.path.join(str(tmp_path), "m")
    standin_models.save_recommender(os.path.join(base, "1"))
    write_png(os.path.join(str(tmp_path), "images", "a.png"), (1, 2, 3))
    text = CSV_HEADER + "n1,T,d,shoes,3.0,images/a.png,\n"
    assert "replace_catalogue" in refused(tmp_path, base, text, refresh_lib.NotRefreshable)
