"""The retraining loop end to end (pipeline/loop/demo.py, what `hyperrec loop-demo` runs).

`tiny` data (seed 42: the shift at span 4 brings a batch of one category): v1 trained by the
local runner on spans 1-3 and served by a real in-process server with a request log; spans
2 and 3 replayed (quiet); span 4 added and replayed -> `monitor` + trigger -> the local runner
(pipeline/runners/local.run in a child process) trains v2 on spans 1-4 (eval split: the last
3.5 days of span 4) -> the ranking gate compares v2 with v1 there -> the Pusher writes v2 -> the server swaps while a
client thread sends requests; then span 4's traffic again. One loop serves every test here.
"""
import json
import os

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
from ml_metadata.metadata_store import metadata_store

from hyperrec.pipeline.loop import monitor, trigger
from hyperrec.pipeline.loop import demo as loop_demo
from hyperrec.pipeline.runners import metadata as metadata_lib
from hyperrec.schemas import features

pytestmark = pytest.mark.e2e

SEED = 42


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("loop")
    return loop_demo.run_loop(str(workdir), experiment="tiny", seed=SEED)


@pytest.fixture(scope="module")
def store(loop):
    return metadata_store.MetadataStore(metadata_lib.connection_config(
        os.path.join(loop.workdir, "metadata.sqlite")))


def _truth(loop):
    with open(os.path.join(loop.workdir, "generated", "ground_truth.json")) as f:
        return json.load(f)


def test_the_loop_starts_from_the_spans_before_the_shift(loop):
    assert loop.shift_span == _truth(loop)["shift"]["span"] == 4
    assert sorted(os.listdir(loop.data_root)) == ["images", "span-1", "span-2", "span-3",
                                                  "span-4"]
    assert loop.v1 > 0  # the Pusher's version: the push time in seconds


def test_quiet_traffic_triggers_nothing_and_says_why(loop, store):
    quiet = loop.windows["quiet"]
    assert quiet["window"] == 2 and quiet["previous_window"] == 1
    assert quiet["served_version"] == loop.v1
    assert quiet["drifted_features"] == [] and quiet["skewed_features"] == []
    # Both comparisons ran: skew against v1's training split (MLMD), drift against window 1.
    assert quiet["skew"] and quiet["drift"] and quiet["training_run"]
    entry = quiet["trigger"]
    assert entry["started"] is False and entry["run_id"] is None
    assert entry["reason"].startswith("window 2: no feature above its threshold (")
    assert entry["reason"].endswith("): no run started")
    written = json.load(open(os.path.join(monitor.window_dir(loop.workdir, 2),
                                          monitor.SUMMARY_FILE)))
    assert written["trigger"] == entry
    assert [_span(e) for e in trigger.triggers(store)] == [loop.shift_span]


def _span(execution):
    return execution.custom_properties["span"].int_value


def test_the_shift_is_seen_on_the_shifted_category(loop):
    shifted = loop.windows["shifted"]
    assert shifted["window"] == 3
    assert features.CATEGORY in shifted["drifted_features"]
    assert features.DEVICE not in shifted["drifted_features"] + shifted["skewed_features"]
    category = {m["feature"]: m for m in shifted["drift"]}[features.CATEGORY]
    assert category["top_shifted"][0]["value"] == _truth(loop)["shift"]["batch_category"]


def test_the_trigger_started_one_local_run_recorded_in_mlmd(loop, store):
    entry = loop.windows["shifted"]["trigger"]
    assert entry["started"] is True and "error" not in entry
    assert (entry["runner"], entry["span"]) == ("local", loop.shift_span)
    assert f"drift:{features.CATEGORY}" in entry["features"]
    assert entry["reason"].endswith(f"new span {loop.shift_span}")
    [execution] = trigger.triggers(store)
    props = {k: v.string_value or v.int_value for k, v in execution.custom_properties.items()}
    assert execution.id == entry["execution_id"]
    assert execution.last_known_state == execution.COMPLETE
    assert props["run_id"] == entry["run_id"]
    assert (props["span"], props["window"], props["runner"]) == (loop.shift_span, 3, "local")
    assert props["reason"] == entry["reason"]
    assert props["data_root"] == loop.data_root
    # The run id is the pipeline run that pushed v2.
    runs = {c.name for c in store.get_contexts_by_type("pipeline_run")}
    assert entry["run_id"] in runs and len(runs) == 2
    # v1's run trained on span 3, the triggered run on span 4 (TFX's records).
    assert sorted(trigger.trained_spans(store)) == [loop.shift_span - 1, loop.shift_span]
    report = open(os.path.join(monitor.window_dir(loop.workdir, 3), monitor.REPORT_FILE)).read()
    assert "Retraining trigger" in report and entry["run_id"] in report


def test_v2_is_blessed_against_v1_and_beats_it_after_the_shift(loop):
    print(f"recall@10 on the post-shift eval period: v1 {loop.recall['v1']:.4f}, "
          f"v2 {loop.recall['v2']:.4f}; gate: {loop.gate_reason}")
    assert loop.blessed, loop.gate_reason
    # Compared with v1 on the post-shift period, and blessed because it is higher there.
    assert (f"improves on the last blessed model (recall@10 {loop.recall['v2']:.4f} vs "
            f"{loop.recall['v1']:.4f})") in loop.gate_reason
    assert loop.recall["v2"] > loop.recall["v1"]
    assert loop.v2 > loop.v1


def test_the_server_swapped_to_v2_without_a_failed_request(loop):
    swap = loop.swap
    assert swap.failed == 0, swap.errors[:3]
    assert swap.sent > 10
    assert (swap.versions_before, swap.versions_after) == ([loop.v1], [loop.v2])
    repeat = loop.windows["repeat"]
    # The client thread's requests were answered by both versions (request log).
    assert set(repeat["versions"]) >= {str(loop.v1), str(loop.v2)}


def test_the_same_shifted_traffic_again_triggers_nothing(loop, store):
    repeat = loop.windows["repeat"]
    entry = repeat["trigger"]
    assert entry["started"] is False
    if repeat["above_threshold"]:
        assert f"span {loop.shift_span} already triggered run " in entry["reason"]
    else:
        assert "no feature above its threshold" in entry["reason"]
    assert len(trigger.triggers(store)) == 1
