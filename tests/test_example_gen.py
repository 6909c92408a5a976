"""The multimodal ExampleGen executor, run for real (Beam DirectRunner) on a hand-built span set."""
import csv
import io
import json
import os

import hyperrec.components  # noqa: F401  (Keras env before TensorFlow)
import pytest
import tensorflow as tf
from PIL import Image
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from hyperrec.schemas import features
from hyperrec.components.example_gen import examples as example_gen_examples
from hyperrec.components.example_gen import executor as executor_lib

DAY = 86400
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def _iso(ts):
    import datetime as dt
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _png(colour, size=(40, 30)):
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    (root / "images" / "red.png").write_bytes(_png((255, 0, 0)))
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    items = [
        ("a", "Red shirt", "a red, cotton shirt", "tops", "9.5", "images/red.png", _iso(T0)),
        ("b", "Shoe", "", "shoes", "30", "images/broken.jpg", _iso(T0)),
        ("c", "Hat", "wool hat", "hats", "12", "", _iso(T0 + 9 * DAY)),  # cold start
    ]
    header_items = features.ITEM_COLUMNS
    header_events = features.INTERACTION_COLUMNS + features.CONTEXT_COLUMNS
    # span-1 (outside a window of 2 spans), span-2 and span-3.
    _write_csv(str(root / "span-1" / "items.csv"), header_items, items[:2])
    _write_csv(str(root / "span-1" / "interactions.csv"), header_events,
               [("u0", "a", _iso(T0 - DAY), "click", "mobile")])
    _write_csv(str(root / "span-2" / "items.csv"), header_items, items[:2])
    _write_csv(str(root / "span-2" / "interactions.csv"), header_events, [
        ("u1", "a", _iso(T0 + 1 * DAY), "click", "mobile"),
        ("u1", "b", _iso(T0 + 2 * DAY), "impression", "mobile"),
        ("u1", "zzz", _iso(T0 + 2 * DAY), "click", "mobile"),  # unknown item
        ("u1", "a", "yesterday-ish", "click", "mobile"),  # unparseable timestamp
    ])
    _write_csv(str(root / "span-3" / "items.csv"), header_items, items)
    _write_csv(str(root / "span-3" / "interactions.csv"), header_events, [
        ("u1", "b", _iso(T0 + 3 * DAY), "purchase", "desktop"),
        ("u2", "a", _iso(T0 + 4 * DAY), "click", ""),  # missing context -> unknown
        ("u1", "c", _iso(T0 + 10 * DAY), "click", "mobile"),  # eval
    ])
    return str(root)


def _run_executor(data_root, out_dir, span=3, eval_days=7.0, window_spans=2, **data_config):
    """Runs the executor; `data_config` overrides DataConfig fields. The hand-built spans are
    far below the production eval minimum and user-share threshold, so those are off here
    unless a test sets them."""
    examples = standard_artifacts.Examples()
    examples.uri = out_dir
    output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name=n, hash_buckets=1)
        for n in ("train", "eval", "catalog")]))
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name="interactions", pattern=f"span-{span}/*.csv")])
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: data_root,
        standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
        standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(output_config),
        standard_component_specs.CUSTOM_CONFIG_KEY: proto_utils.proto_to_json(
            executor_lib.encode_custom_config({"image_size": 16, "history_length": 3,
                                               "eval_days": eval_days,
                                               "window_spans": window_spans,
                                               "min_eval_examples": 0,
                                               "max_user_share": 1.0,
                                               **data_config})),
        "span": span,
    }
    executor_lib.Executor().Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]},
                               exec_properties)
    return examples


def _read_split(out_dir, split):
    pattern = os.path.join(out_dir, f"Split-{split}", "*")
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), compression_type="GZIP")
    parsed = []
    for raw in records:
        ex = tf.train.Example.FromString(raw.numpy())
        row = {}
        for key, feat in ex.features.feature.items():
            kind = feat.WhichOneof("kind")
            values = list(getattr(feat, kind).value)
            row[key] = values
        parsed.append(row)
    return parsed


@pytest.fixture(scope="module")
def output(data_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("examples"))
    artifact = _run_executor(data_root, out)
    return out, artifact


def _by_user_item(rows):
    return {(r[features.USER_ID][0].decode(), r[features.ITEM_ID][0].decode(),
             r[features.TIMESTAMP][0]): r for r in rows}


def test_time_split_and_rolling_window(output):
    out, _ = output
    train = _by_user_item(_read_split(out, "train"))
    evals = _by_user_item(_read_split(out, "eval"))
    # Last event T0+10d; eval_days=7 -> cutoff T0+3d: [T0+3d, ...] is eval.
    assert set(train) == {("u1", "a", T0 + DAY), ("u1", "b", T0 + 2 * DAY)}
    assert set(evals) == {("u1", "b", T0 + 3 * DAY), ("u2", "a", T0 + 4 * DAY),
                          ("u1", "c", T0 + 10 * DAY)}
    # span-1 is outside the window of 2 spans: u0 never appears.
    assert not any(key[0] == "u0" for key in list(train) + list(evals))


def test_point_in_time_history_crosses_spans_and_skips_impressions(output):
    out, _ = output
    rows = {**_by_user_item(_read_split(out, "train")), **_by_user_item(_read_split(out, "eval"))}
    assert rows[("u1", "a", T0 + DAY)].get(features.HISTORY, []) == []
    assert rows[("u1", "b", T0 + 2 * DAY)][features.HISTORY] == [b"a"]
    # The impression of b at T0+2d is not history; the purchase at T0+3d is. An engaged id
    # missing from the catalogue (zzz) stays in history: the user did engage with it, and the
    # model maps it to the out-of-vocabulary bucket as serving would.
    assert rows[("u1", "b", T0 + 3 * DAY)][features.HISTORY] == [b"a", b"zzz"]
    assert rows[("u1", "c", T0 + 10 * DAY)][features.HISTORY] == [b"a", b"zzz", b"b"]


def test_join_labels_context_and_cold_start(output):
    out, _ = output
    rows = {**_by_user_item(_read_split(out, "train")), **_by_user_item(_read_split(out, "eval"))}
    clicked = rows[("u1", "a", T0 + DAY)]
    assert clicked[features.LABEL] == [1] and clicked[features.CATEGORY] == [b"tops"]
    assert clicked[features.TITLE] == [b"Red shirt"]
    assert rows[("u1", "b", T0 + 2 * DAY)][features.LABEL] == [0]
    assert rows[("u2", "a", T0 + 4 * DAY)][features.DEVICE] == [b"unknown"]
    assert rows[("u1", "c", T0 + 10 * DAY)][features.COLD_START] == [1]
    assert clicked[features.COLD_START] == [0]


def test_images_normalised_once_and_flagged(output):
    out, _ = output
    catalog = {r[features.ITEM_ID][0].decode(): r for r in _read_split(out, "catalog")}
    assert set(catalog) == {"a", "b", "c"}
    status = {k: v[features.IMAGE_STATUS][0].decode() for k, v in catalog.items()}
    assert status == {"a": "ok", "b": "corrupt", "c": "missing"}
    with Image.open(io.BytesIO(catalog["a"][features.IMAGE][0])) as img:
        assert img.size == (16, 16) and img.getpixel((8, 8)) == (255, 0, 0)
    assert catalog["b"][features.IMAGE] == [b""]
    assert catalog["c"][features.COLD_START] == [1]


def test_report_counts_what_was_read_flagged_and_dropped(output):
    out, artifact = output
    with open(os.path.join(out, executor_lib.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["interaction_read"] == 7  # every row read, kept or not
    assert report["interaction_bad_timestamp"] == 1
    assert report["interaction_unknown_item"] == 1
    assert report["train_examples"] == 2 and report["eval_examples"] == 3
    assert (report["image_ok"], report["image_corrupt"], report["image_missing"]) == (1, 1, 1)
    assert artifact.get_int_custom_property("interaction_unknown_item") == 1


def _raw_split(out_dir, split):
    pattern = os.path.join(out_dir, f"Split-{split}", "*")
    return [r.numpy() for r in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern)),
                                                        compression_type="GZIP")]


@pytest.fixture(scope="module")
def busy_root(tmp_path_factory):
    """One span in which every one of 6 items has many events (the join emits them per item)."""
    root = tmp_path_factory.mktemp("busy")
    _write_csv(str(root / "span-1" / "items.csv"), features.ITEM_COLUMNS,
               [(f"i{k}", f"Item {k}", "", "tops", "5", "", _iso(T0)) for k in range(6)])
    events = [(f"u{u}", f"i{(u + k) % 6}", _iso(T0 + u * 3600 + k * 60),
               "click" if (u + k) % 3 else "impression", "mobile")
              for u in range(40) for k in range(6)]
    _write_csv(str(root / "span-1" / "interactions.csv"),
               features.INTERACTION_COLUMNS + features.CONTEXT_COLUMNS, events)
    return str(root)


def test_splits_are_written_in_one_mixed_order_on_every_run_and_runner(busy_root,
                                                                       tmp_path_factory):
    from tfx.dsl.components.base import base_beam_executor

    def run(name, beam_args=(), **data_config):
        out = str(tmp_path_factory.mktemp(name))
        examples = standard_artifacts.Examples()
        examples.uri = out
        executor = executor_lib.Executor(base_beam_executor.BaseBeamExecutor.Context(
            beam_pipeline_args=list(beam_args)))
        exec_properties = {
            standard_component_specs.INPUT_BASE_KEY: busy_root,
            standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(
                example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(
                    name="interactions", pattern="span-1/*.csv")])),
            standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(
                example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
                    example_gen_pb2.SplitConfig.Split(name=n, hash_buckets=1)
                    for n in ("train", "eval", "catalog")]))),
            standard_component_specs.CUSTOM_CONFIG_KEY: proto_utils.proto_to_json(
                executor_lib.encode_custom_config({
                    "image_size": 8, "history_length": 2, "eval_days": 0.5,
                    "min_eval_examples": 0, "max_user_share": 1.0, **data_config})),
            "span": 1,
        }
        executor.Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
        return {split: _raw_split(out, split) for split in ("train", "eval", "catalog")}

    in_memory = run("in_memory")
    workers = run("workers", ["--direct_running_mode=multi_processing",
                              "--direct_num_workers=2"])
    for split in in_memory:
        assert sorted(in_memory[split]) == sorted(workers[split]), split
        assert in_memory[split] == workers[split], split  # the same bytes in the same order
    train = in_memory["train"]
    assert train == sorted(train, key=example_gen_examples.order_key) and len(train) > 100
    items = [tf.train.Example.FromString(r).features.feature[features.ITEM_ID]
             .bytes_list.value[0] for r in train]
    changes = sum(a != b for a, b in zip(items, items[1:]))
    assert changes > 0.6 * len(items)  # the join emits each item's events together
    bucketed = run("bucketed", order_buckets=3)
    assert {k: sorted(v) for k, v in bucketed.items()} == {
        k: sorted(v) for k, v in in_memory.items()}
