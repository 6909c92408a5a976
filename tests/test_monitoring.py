"""Monitoring on replayed synthetic traffic through a real server and its request log.

`small` sample data (seed 7): the generator's shift is at span 7, where a batch of `bags`
arrives. Windows: span 5, then span 6 (no shift: nothing drifts), then span 7 (the category
share of bags jumps: item_category drifts; device, which the generator never shifts, does not).
"""
import base64
import json
import os

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from hyperrec.components import config as config_lib
from hyperrec.schemas import features
from hyperrec.pipeline.loop import drift, logs, monitor, traffic
from hyperrec.data import synthetic as datagen
from hyperrec.serving import client as client_lib
from hyperrec.serving import config, request_log
import standin_models
from hyperrec.serving.server import ModelServer, ServerOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = os.path.join(REPO, "schemas", "schema.pbtxt")
SEED = 7
BATCH = 250  # examples per predict request


def replay(port: int, examples) -> int:
    """POSTs the serving tf.Examples to serving_default in batches; returns the requests."""
    client = client_lib.RestClient(port=port, model_name="hyperrec")
    try:
        for start in range(0, len(examples), BATCH):
            client.predict([{"b64": base64.b64encode(e).decode()}
                            for e in examples[start:start + BATCH]],
                           signature_name=features.SERVING_DEFAULT)
    finally:
        client.close()
    return (len(examples) + BATCH - 1) // BATCH


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Generated data, a served stand-in model with a request log, and three windows."""
    root = tmp_path_factory.mktemp("monitoring")
    data_root = str(root / "data")
    datagen.generate("small", SEED, data_root)
    truth = json.load(open(os.path.join(data_root, "ground_truth.json")))
    data = config_lib.load("small").data
    base = str(root / "models")
    standin_models.save_recommender(os.path.join(base, "1"))
    log_dir, workdir = str(root / "requests"), str(root / "work")
    options = ServerOptions(models=config.single_model("hyperrec", base), grpc_port=None,
                            rest_port=0, poll_seconds=0, request_log_dir=log_dir)
    summaries, sent = {}, {}
    with ModelServer(options) as server:
        for span in (5, 6, 7):
            examples = traffic.span_requests(data_root, span, data.history_length,
                                             data.image_size)
            sent[span] = (replay(server.rest_port, examples), len(examples))
            summaries[span] = monitor.run(log_dir, workdir, SCHEMA)
    return dict(data_root=data_root, truth=truth, log_dir=log_dir, workdir=workdir,
                summaries=summaries, sent=sent)


def _by_feature(measurements):
    return {m["feature"]: m for m in measurements}


def _category_shares(data_root, span):
    interactions = pd.read_csv(os.path.join(data_root, f"span-{span}", "interactions.csv"))
    items = pd.read_csv(os.path.join(data_root, f"span-{span}", "items.csv"))
    joined = interactions.merge(items, on="item_id")
    return joined["category"].value_counts(normalize=True).to_dict()


def test_shift_span_is_where_the_test_looks(world):
    assert world["truth"]["shift"]["span"] == 7
    assert world["truth"]["shift"]["batch_category"] == "bags"


def test_each_window_holds_exactly_the_new_requests(world):
    for window, span in enumerate((5, 6, 7), start=1):
        summary = world["summaries"][span]
        requests, examples = world["sent"][span]
        assert summary["window"] == window
        assert (summary["requests"], summary["examples"]) == (requests, examples)
        assert summary["versions"] == {"1": examples}
        assert summary["served_version"] == 1


def test_first_window_has_no_drift_and_names_why(world):
    first = world["summaries"][5]
    assert first["drift"] == [] and first["previous_window"] is None
    assert first["drift_unavailable"] == "the first window has no previous window"
    # No pipeline run wrote this workdir: skew cannot be tied to training, and says so.
    assert "no metadata store" in first["skew_unavailable"]


def test_no_shift_no_drift(world):
    quiet = world["summaries"][6]
    measured = _by_feature(quiet["drift"])
    assert set(measured) == {features.DEVICE, features.CATEGORY, features.PRICE}
    assert quiet["drifted_features"] == [] and quiet["above_threshold"] is False
    assert quiet["anomalies"] == {}


def test_shift_drifts_on_the_shifted_category_only(world):
    shifted = world["summaries"][7]
    assert shifted["drifted_features"] == [features.CATEGORY]
    assert shifted["above_threshold"] is True
    category = _by_feature(shifted["drift"])[features.CATEGORY]
    # Hand check: L-infinity = the largest change of a category's share, from the CSVs.
    before, after = _category_shares(world["data_root"], 6), _category_shares(
        world["data_root"], 7)
    expected = max(abs(after.get(c, 0) - before.get(c, 0)) for c in set(before) | set(after))
    assert category["value"] == pytest.approx(expected, abs=1e-6)
    assert category["threshold"] == 0.05 and category["comparator"] == "L_INFTY"
    assert category["top_shifted"][0]["value"] == world["truth"]["shift"]["batch_category"]
    assert category["top_shifted"][0]["change"] > 0.05


def test_report_files_of_a_window(world):
    out = monitor.window_dir(world["workdir"], 3)
    assert sorted(os.listdir(out)) == ["report.html", "statistics.pb", "summary.json"]
    page = open(os.path.join(out, "report.html")).read()
    assert page.count("data:image/png;base64,") == 1  # drift plotted; skew unavailable
    assert "ABOVE" in page and "bags" in page
    stats = tfdv.load_stats_binary(os.path.join(out, "statistics.pb"))
    assert stats.datasets[0].num_examples == world["sent"][7][1]
    state = monitor.load_state(world["workdir"])
    assert [w["above_threshold"] for w in state["windows"]] == [False, False, True]


def test_skew_against_training_statistics(world, tmp_path):
    """Skew of the shifted window against statistics of pre-shift traffic (span 5)."""
    data = config_lib.load("small").data
    schema = drift.load_schema(SCHEMA)
    rows = logs.example_rows(tf.train.Example.FromString(e) for e in traffic.span_requests(
        world["data_root"], 5, data.history_length, data.image_size, with_images=False))
    path = str(tmp_path / "FeatureStats.pb")
    with open(path, "wb") as f:
        f.write(drift.statistics(rows, schema).SerializeToString())
    shifted = tfdv.load_stats_binary(os.path.join(monitor.window_dir(world["workdir"], 3),
                                                  monitor.STATISTICS_FILE))
    skew = {m.feature: m for m in drift.compare_skew(tfdv.load_stats_binary(path), shifted,
                                                      schema)}
    assert skew[features.CATEGORY].above and not skew[features.DEVICE].above
    assert skew[features.PRICE].comparator == "JENSEN_SHANNON_DIVERGENCE"
    assert not skew[features.PRICE].above


def test_nothing_new_is_a_named_outcome(world):
    with pytest.raises(monitor.NoNewRequests, match="since window 3"):
        monitor.run(world["log_dir"], world["workdir"], SCHEMA)


def test_a_torn_tail_ends_its_file_only(tmp_path):
    writer = request_log.RequestLogWriter(str(tmp_path))
    for n in range(3):
        writer.write(f"record-{n}".encode())
    writer.close()
    path = request_log.log_files(str(tmp_path))[0]
    with open(path, "ab") as f:
        f.write(b"\x30\x00\x00\x00\x00\x00\x00\x00torn")  # a frame header, its body cut
    window = logs.read_window(str(tmp_path))
    assert window.records == [b"record-0", b"record-1", b"record-2"]
    assert window.torn_files == [os.path.basename(path)]
    assert logs.read_window(str(tmp_path), window.cursor).records == []


def test_recommend_requests_become_query_rows(tmp_path):
    base = tmp_path / "m"
    standin_models.save_recommender(str(base / "3"))
    options = ServerOptions(models=config.single_model("hyperrec", str(base)), grpc_port=None,
                            rest_port=0, poll_seconds=0, request_log_dir=str(tmp_path / "log"))
    with ModelServer(options) as server:
        client = client_lib.RestClient(port=server.rest_port, model_name="hyperrec")
        client.recommend("u1", ["i01", "i02"], device="mobile", k=2, timestamp=1700000000)
        client.recommend("u2", [], device="tablet", k=2, timestamp=1700000060)
        client.close()
    rows = list(logs.rows_of(logs.read_window(str(tmp_path / "log")).records))
    assert [(r[features.USER_ID], r[features.HISTORY], r[features.DEVICE],
             r[features.TIMESTAMP], r[logs.VERSION]) for r in rows] == [
        ([b"u1"], [b"i01", b"i02"], [b"mobile"], [1700000000], 3),
        ([b"u2"], [], [b"tablet"], [1700000060], 3)]


def test_monitor_command(world, tmp_path):
    from click.testing import CliRunner
    from hyperrec.pipeline import cli
    args = ["monitor", "--serving-log", world["log_dir"], "--workdir", str(tmp_path)]
    result = CliRunner().invoke(cli.main, args + ["--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["window"] == 1
    assert summary["examples"] == sum(examples for _, examples in world["sent"].values())
    again = CliRunner().invoke(cli.main, args)
    assert again.exit_code == 0 and "no requests logged" in again.output
    missing = CliRunner().invoke(cli.main, ["monitor", "--serving-log", str(tmp_path / "none"),
                                            "--workdir", str(tmp_path / "w")])
    assert missing.exit_code == 0 and "no requests logged" in missing.output
