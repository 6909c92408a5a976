"""Canary against stable (pipeline/loop/canary.py): engaged outcomes, intervals and
decisions computed by hand, every named outcome, and `hyperrec monitor --feedback` over a
real server's request log followed by `hyperrec promote`."""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import csv
import json
import os

import pytest
from click.testing import CliRunner

from hyperrec.components.config import CanaryConfig
from hyperrec.pipeline.loop import canary, monitor
from hyperrec.pipeline.cli import loop as monitoring_cli
from hyperrec.pipeline.cli import serve as serving_cli
from hyperrec.serving import client, config, routing
import standin_models
from hyperrec.serving.server import ModelServer, options_from_flags

pytestmark = pytest.mark.timeout(180)

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
HOUR = 3600
CONFIG = CanaryConfig(min_requests_per_label=100, margin=0.05, horizon_hours=1.0)


def iso(t: int) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_span(folder, rows, header=("user_id", "item_id", "timestamp", "event", "device")):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "interactions.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(folder)


def arm(label, n, engaged, version):
    """n requests of `label` (users label-0..), each recommending a, b; the first `engaged`
    users click b 30 minutes later, the others only see a (an impression)."""
    requests, rows = [], []
    for i in range(n):
        user, t = f"{label}-{i}", T0 + 60 * i
        requests.append(canary.Request(user, label, version, t, ("a", "b")))
        rows.append((user, "b", iso(t + 1800), "click", "mobile") if i < engaged
                    else (user, "a", iso(t + 1800), "impression", "mobile"))
    return requests, rows


def scenario(tmp_path, stable_engaged, canary_engaged, canary_n=100, stable_n=100):
    s_req, s_rows = arm("stable", stable_n, stable_engaged, 1)
    c_req, c_rows = arm("canary", canary_n, canary_engaged, 2)
    span = write_span(tmp_path / "span-9", sorted(s_rows + c_rows, key=lambda r: r[2]))
    return canary.evaluate(s_req + c_req, span, CONFIG)


# ---- statistics by hand ---------------------------------------------------------------------

def test_wilson_and_newcombe_by_hand():
    # Wilson, z = 1.959964: centre (p + z^2/2n) / (1 + z^2/n), half-width
    # z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n). 20/100: 0.211098 -+ 0.077731.
    assert canary.wilson(20, 100, 0.95) == pytest.approx((0.133367, 0.288829), abs=1e-6)
    assert canary.wilson(40, 100, 0.95) == pytest.approx((0.309401, 0.497997), abs=1e-6)
    # Newcombe: 0.2 - sqrt(0.090599^2 + 0.088829^2) = 0.2 - sqrt(0.0160987) = 0.2 - 0.126881,
    #           0.2 + sqrt(0.097997^2 + 0.066633^2) = 0.2 + sqrt(0.0140435) = 0.2 + 0.118505.
    assert canary.newcombe((40, 100), (20, 100), 0.95) == pytest.approx(
        (0.073119, 0.318505), abs=2e-6)


def test_engaged_means_a_recommended_item_engaged_with_inside_the_horizon(tmp_path):
    request = canary.Request("u1", "canary", 2, T0, ("a", "b"))
    cases = {  # one feedback row each -> engaged?
        ("u1", "b", T0 + HOUR - 1, "click"): True,
        ("u1", "a", T0, "purchase"): True,  # at the request's second
        ("u1", "b", T0 + 10, "add_to_cart"): True,
        ("u1", "b", T0 + HOUR, "click"): False,  # the horizon is half-open
        ("u1", "b", T0 - 1, "click"): False,  # before the request
        ("u1", "c", T0 + 10, "click"): False,  # not recommended
        ("u1", "b", T0 + 10, "impression"): False,  # seen, not engaged
        ("u2", "b", T0 + 10, "click"): False,  # someone else
    }
    for (user, item, t, event), expected in cases.items():
        span = write_span(tmp_path / "s", [(user, item, iso(t), event, "")])
        assert canary.is_engaged(request, canary.read_feedback(span), HOUR) is expected, \
            (user, item, t, event)


# ---- decisions ------------------------------------------------------------------------------

def test_a_better_canary_is_promoted(tmp_path):
    block = scenario(tmp_path, stable_engaged=20, canary_engaged=40)
    assert block["decision"] == canary.PROMOTE
    assert block["labels"]["stable"] == {"requests": 100, "engaged": 20, "rate": 0.2,
                                         "interval": pytest.approx([0.133367, 0.288829], abs=1e-6),
                                         "versions": {"1": 100}}
    assert block["labels"]["canary"]["rate"] == 0.4
    assert block["difference"]["value"] == pytest.approx(0.2)
    assert block["difference"]["interval"] == pytest.approx([0.073119, 0.318505], abs=2e-6)
    assert block["feedback_rows"] == 200 and block["feedback_rows_in_window"] == 200


def test_a_worse_canary_is_rolled_back(tmp_path):
    block = scenario(tmp_path, stable_engaged=40, canary_engaged=20)
    assert block["decision"] == canary.ROLL_BACK
    assert block["difference"]["interval"] == pytest.approx([-0.318505, -0.073119], abs=2e-6)
    assert "lies below 0" in block["reason"]


def test_an_inconclusive_difference_keeps_collecting(tmp_path):
    # 15/100 vs 20/100 (Wilson 15/100: [0.093060, 0.232836]):
    # -0.05 - sqrt(0.056940^2 + 0.088829^2) = -0.05 - 0.105512 (below -0.05),
    # -0.05 + sqrt(0.082836^2 + 0.066633^2) = -0.05 + 0.106310 (above 0).
    block = scenario(tmp_path, stable_engaged=20, canary_engaged=15)
    assert block["decision"] == canary.KEEP_COLLECTING
    assert block["difference"]["interval"] == pytest.approx([-0.155512, 0.056310], abs=2e-6)
    assert block["reason"].startswith("inconclusive")


def test_too_few_canary_requests_keep_collecting(tmp_path):
    block = scenario(tmp_path, stable_engaged=20, canary_engaged=40, canary_n=99)
    assert block["decision"] == canary.KEEP_COLLECTING
    assert block["reason"] == "fewer than 100 requests on canary"
    assert block["difference"] is None


def test_no_canary_traffic(tmp_path):
    requests, rows = arm("stable", 10, 5, 1)
    unlabelled = [canary.Request("x", "", 1, T0, ("a",))]
    block = canary.evaluate(requests + unlabelled, write_span(tmp_path / "s", rows), CONFIG)
    assert block["decision"] == canary.NO_CANARY_TRAFFIC
    assert block["other_requests"] == 1 and block["labels"]["stable"]["engaged"] == 5


def test_no_feedback_in_the_window(tmp_path):
    requests, _ = arm("canary", 5, 0, 2)
    # Rows before the first request and from the last request + 1 h on count for nothing.
    rows = [("canary-0", "b", iso(T0 - 1), "click", ""),
            ("canary-0", "b", iso(T0 + 4 * 60 + HOUR), "click", "")]
    block = canary.evaluate(requests, write_span(tmp_path / "s", rows), CONFIG)
    assert block["decision"] == canary.NO_FEEDBACK
    assert block["feedback_rows"] == 2 and block["feedback_rows_in_window"] == 0
    empty = canary.evaluate(requests, write_span(tmp_path / "e", []), CONFIG)
    assert empty["decision"] == canary.NO_FEEDBACK


@pytest.mark.parametrize("damage", ["no file", "missing column", "no valid row", "not utf-8"])
def test_a_malformed_feedback_span_is_named(tmp_path, damage):
    folder = tmp_path / "span"
    if damage == "missing column":
        write_span(folder, [("u", "a", iso(T0))], header=("user_id", "item_id", "timestamp"))
    elif damage == "no valid row":  # a date-only timestamp, an unknown event, an empty user
        write_span(folder, [("u", "a", "2023-11-14", "click"), ("u", "a", iso(T0), "view"),
                            ("", "a", iso(T0), "click")], header=("user_id", "item_id",
                                                                  "timestamp", "event"))
    elif damage == "not utf-8":
        os.makedirs(folder)
        (folder / "interactions.csv").write_bytes(b"user_id,item_id,timestamp,event\n\xff\xfe,")
    else:
        os.makedirs(folder)
    requests, _ = arm("canary", 3, 0, 2)
    block = canary.evaluate(requests, str(folder), CONFIG)
    assert block["decision"] == canary.FEEDBACK_MALFORMED
    assert {"no file": "no interactions.csv", "missing column": "['event']",
            "no valid row": "none of its 3 row(s)", "not utf-8": "not the contract's CSV"
            }[damage] in block["reason"]


def test_bad_rows_are_skipped_and_counted(tmp_path):
    requests, rows = arm("canary", 3, 3, 2)
    rows.append(("canary-0", "b", "2023-11-14T22:13:20+00:00", "click", ""))  # not contract
    feedback = canary.read_feedback(write_span(tmp_path / "s", rows))
    assert (feedback.rows_read, feedback.rows_skipped) == (4, 1)


# ---- the monitor and promote over a real server ---------------------------------------------

def test_monitor_feedback_decides_and_promote_moves_stable(tmp_path):
    base = tmp_path / "hyperrec"
    standin_models.save_recommender(str(base / "1"))
    standin_models.save_recommender(str(base / "2"), offset=1.0)
    config_file = tmp_path / "models.config"
    config_file.write_text(
        'model_config_list { config { name: "hyperrec" base_path: "%s" '
        'model_platform: "tensorflow" model_version_policy { latest { num_versions: 2 } } '
        'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } '
        '} }' % base)
    log_dir = tmp_path / "requests"
    options = options_from_flags("ignored", None, str(config_file), grpc_port=None,
                                 rest_port=0, poll_seconds=0, request_log_dir=str(log_dir))
    users = [f"u{i:04d}" for i in range(240)]
    answers = {}
    with ModelServer(options) as server:
        routed = client.RestClient(port=server.rest_port, canary_share=0.5)
        for i, user in enumerate(users):
            answers[user] = routed.recommend(user, [], "mobile", 2, timestamp=T0 + i)
        routed.close()
    labels = {u: routing.label_for(u, 0.5) for u in users}
    # Canary users click their top item 10 minutes later; stable users only every fourth.
    rows = [(u, answers[u][0][0], iso(T0 + i + 600),
             "click" if labels[u] == "canary" or i % 4 == 0 else "impression", "desktop")
            for i, u in enumerate(users)]
    span = write_span(tmp_path / "span-2", rows)
    n_canary = sum(v == "canary" for v in labels.values())
    n_stable = len(users) - n_canary
    stable_engaged = sum(1 for i, u in enumerate(users) if labels[u] == "stable" and i % 4 == 0)

    result = CliRunner().invoke(monitoring_cli.monitor, [
        "--serving-log", str(log_dir), "--workdir", str(tmp_path / "work"), "--feedback", span,
        "--set", "monitoring.canary.min_requests_per_label=50"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "canary: promote" in result.output
    assert "hyperrec promote --config models.config" in result.output
    window = monitor.window_dir(str(tmp_path / "work"), 1)
    with open(os.path.join(window, monitor.SUMMARY_FILE)) as f:
        block = json.load(f)["canary"]
    assert block["decision"] == "promote" and block["min_requests_per_label"] == 50
    assert block["labels"]["canary"] == {
        "requests": n_canary, "engaged": n_canary, "rate": 1.0,
        "interval": pytest.approx(list(canary.wilson(n_canary, n_canary, 0.95))),
        "versions": {"2": n_canary}}
    assert block["labels"]["stable"]["requests"] == n_stable
    assert block["labels"]["stable"]["engaged"] == stable_engaged
    assert block["labels"]["stable"]["versions"] == {"1": n_stable}
    with open(os.path.join(window, monitor.REPORT_FILE)) as f:
        page = f.read()
    assert "<h3>Canary (canary against stable, engaged within 24 h)</h3>" in page
    assert "<b>promote</b>" in page

    result = CliRunner().invoke(serving_cli.promote, ["--config", str(config_file)])
    assert result.exit_code == 0, result.output
    assert config.version_labels(str(config_file), "hyperrec") == {"stable": 2, "canary": 2}


def test_monitor_without_feedback_has_no_canary_block_and_a_bad_span_is_named(tmp_path):
    base = tmp_path / "m"
    standin_models.save_recommender(str(base / "1"))
    log_dir = tmp_path / "requests"
    with ModelServer(standin_models.rest_only_options("hyperrec", str(base),
                                               request_log_dir=str(log_dir))) as server:
        rest = client.RestClient(port=server.rest_port)
        rest.recommend("u1", [], "", 2, timestamp=T0)
        rest.recommend("u2", [], "", 2, timestamp=T0, label=None)
        rest.close()
    schema = os.path.join(os.path.dirname(os.path.dirname(__file__)), "schemas",
                          "schema.pbtxt")
    summary = monitor.run(str(log_dir), str(tmp_path / "w1"), schema)
    assert "canary" not in summary
    summary = monitor.run(str(log_dir), str(tmp_path / "w2"), schema,
                          feedback=str(tmp_path / "nowhere"))
    assert summary["canary"]["decision"] == canary.FEEDBACK_MALFORMED
    span = write_span(tmp_path / "span", [("u1", "item-00", iso(T0 + 5), "click", "")])
    summary = monitor.run(str(log_dir), str(tmp_path / "w3"), schema, feedback=span)
    assert summary["canary"]["decision"] == canary.NO_CANARY_TRAFFIC
    assert summary["canary"]["other_requests"] == 2
