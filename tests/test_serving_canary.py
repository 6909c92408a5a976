"""Canary routing (a stable hash of the user id), the requested label and answering version in
the request log (REST and gRPC), and promote/rollback of the labels in models.config while a
server re-reads it."""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from hyperrec.pipeline.loop import logs
from hyperrec.pipeline.cli import serve as cli
from hyperrec.serving import client, config, request_log, routing
import standin_models
from hyperrec.serving.server import ModelServer, options_from_flags

pytestmark = pytest.mark.timeout(120)

CANARY_OFFSET = 10.0  # version 2's scores are version 1's + 10: the answer names its version


# ---- routing ------------------------------------------------------------------------------

# `printf %s ID | sha256sum` (coreutils), first 16 hex digits: the bucket is that / 2**64.
SHA256_PREFIX = {"u00042": "8011cfb23f4d5850", "u1": "bb82030dbc2bcaba",
                 "user-7": "092081140b677b45"}


def test_bucket_is_the_sha256_prefix_of_the_user_id():
    for user, prefix in SHA256_PREFIX.items():
        assert routing.bucket(user) == int(prefix, 16) / 2 ** 64
    # By hand from the first 4 hex digits: 0x8011 / 0x10000 = 32785 / 65536 = 0.50026...
    assert abs(routing.bucket("u00042") - 32785 / 65536) < 1 / 65536
    assert abs(routing.bucket("user-7") - 0x0920 / 0x10000) < 1 / 65536


def test_label_for_follows_the_bucket():
    assert routing.label_for("user-7", 0.1) == "canary"  # 0.0357 < 0.1
    assert routing.label_for("u00042", 0.5) == "stable"  # 0.50027 >= 0.5
    assert routing.label_for("u00042", 0.51) == "canary"
    assert routing.label_for("u1", 0.73) == "stable"  # 0.73245
    assert routing.label_for("u1", 0.74) == "canary"
    assert routing.label_for("u1", 0.0) is None  # no share: no label, today's behaviour
    assert routing.label_for("u1", 1.0) == "canary"
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="canary share"):
            routing.label_for("u1", bad)


def test_the_share_is_honoured_on_many_ids():
    users = [f"u{i:06d}" for i in range(20000)]
    for share in (0.05, 0.1, 0.5):
        canary = sum(routing.label_for(u, share) == "canary" for u in users)
        # binomial sd at n=20000 is at most 0.0036; 4 sd
        assert abs(canary / len(users) - share) < 0.015, (share, canary)
    # Raising the share only moves users stable -> canary.
    small = {u for u in users if routing.label_for(u, 0.1) == "canary"}
    large = {u for u in users if routing.label_for(u, 0.2) == "canary"}
    assert small < large


def test_the_same_user_gets_the_same_label_in_other_processes():
    users = [f"u{i}" for i in range(50)]
    expected = [routing.label_for(u, 0.3) for u in users]
    script = ("import sys; from hyperrec.serving import routing; "
              "print(','.join(routing.label_for(u, 0.3) for u in sys.argv[1:]))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", script, *users], check=True,
                             capture_output=True, text=True,
                             env=dict(os.environ, PYTHONHASHSEED=seed)).stdout
        assert out.strip().split(",") == expected


# ---- a server with stable = 1 and canary = 2 ----------------------------------------------

def write_models_config(path, base_path, labels):
    message = model_server_config_pb2.ModelServerConfig()
    model = message.model_config_list.config.add(name="hyperrec", base_path=str(base_path),
                                                 model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = 2
    for label, version in labels.items():
        model.version_labels[label] = version
    path.write_text(text_format.MessageToString(message))


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    base = tmp_path_factory.mktemp("canary") / "hyperrec"
    standin_models.save_recommender(str(base / "1"))
    standin_models.save_recommender(str(base / "2"), offset=CANARY_OFFSET)
    return base


def start_server(tmp_path, base, config_poll_seconds=0.0):
    config_file = tmp_path / "models.config"
    write_models_config(config_file, base, {"stable": 1, "canary": 2})
    options = options_from_flags(
        "ignored", None, str(config_file), grpc_port=0, rest_port=0, poll_seconds=0,
        config_poll_seconds=config_poll_seconds, request_log_dir=str(tmp_path / "requests"))
    return ModelServer(options).start(), config_file


def answering_version(ranked):
    return 2 if ranked[0][1] > CANARY_OFFSET / 2 else 1


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
def test_routed_requests_log_their_label_and_the_answering_version(tmp_path, versions,
                                                                   use_grpc):
    server, _ = start_server(tmp_path, versions)
    users = [f"u{i:03d}" for i in range(40)]
    try:
        port = server.grpc_port if use_grpc else server.rest_port
        routed = client.make_client(use_grpc, "127.0.0.1", port, "hyperrec", canary_share=0.5)
        answers = {u: answering_version(routed.recommend(u, ["item-01"], "mobile", 3,
                                                         timestamp=1700000000)) for u in users}
        routed.close()
    finally:
        server.stop()
    expected_label = {u: routing.label_for(u, 0.5) for u in users}
    assert set(expected_label.values()) == {"stable", "canary"}
    assert answers == {u: 2 if expected_label[u] == "canary" else 1 for u in users}
    logged = list(request_log.read_prediction_logs(str(tmp_path / "requests")))
    assert len(logged) == len(users)
    for log in logged:
        user = log.predict_log.request.inputs["user_id"].string_val[0].decode()
        assert log.predict_log.request.model_spec.version_label == expected_label[user]
        assert log.log_metadata.model_spec.version.value == answers[user]
    # The monitoring reader sees the same label and version on every row.
    rows = list(logs.rows_of(list(request_log.read_records(str(tmp_path / "requests")))))
    assert sorted((r["user_id"][0].decode(), r[logs.VERSION_LABEL], r[logs.VERSION])
                  for r in rows) == sorted((u, expected_label[u], answers[u]) for u in users)


def test_a_rest_request_by_version_and_a_large_one_by_label_log_what_they_named(tmp_path,
                                                                                versions):
    server, _ = start_server(tmp_path, versions)
    long_history = [f"seen-{i:06d}" for i in range(30000)]  # > 256 KiB: parsed off the loop
    try:
        rest = client.RestClient(port=server.rest_port)
        rest.recommend("u1", [], "", 2, timestamp=1, version=1)
        assert answering_version(rest.recommend("u1", long_history, "", 2, timestamp=1,
                                                label="canary")) == 2
        rest.close()
    finally:
        server.stop()
    by_version, by_label = request_log.read_prediction_logs(str(tmp_path / "requests"))
    assert by_version.predict_log.request.model_spec.version.value == 1
    assert by_version.predict_log.request.model_spec.WhichOneof("version_choice") == "version"
    assert by_label.predict_log.request.model_spec.version_label == "canary"
    assert by_label.log_metadata.model_spec.version.value == 2


def test_recommend_command_routes_by_share(tmp_path, versions):
    server, _ = start_server(tmp_path, versions)
    try:
        for share, user, version in (("1.0", "u1", 2), ("0.5", "u00042", 1)):
            result = CliRunner().invoke(cli.recommend, [
                "--user", user, "--k", "2", "--port", str(server.rest_port), "--json",
                "--canary-share", share], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            top_score = json.loads(result.output)[0]["score"]
            assert answering_version([("", top_score)]) == version
        refused = CliRunner().invoke(cli.recommend, ["--user", "u1", "--canary-share", "0.2",
                                                     "--label", "stable"])
        assert refused.exit_code == 2 and "--canary-share chooses the label" in refused.output
        bad = CliRunner().invoke(cli.recommend, ["--user", "u1", "--canary-share", "1.5"])
        assert bad.exit_code == 2 and "1.5" in bad.output
    finally:
        server.stop()
    labels = [log.predict_log.request.model_spec.version_label
              for log in request_log.read_prediction_logs(str(tmp_path / "requests"))]
    assert labels == ["canary", "stable"]


# ---- promote / rollback --------------------------------------------------------------------

def test_promote_while_serving_switches_stable_without_a_failed_request(tmp_path, versions):
    server, config_file = start_server(tmp_path, versions, config_poll_seconds=0.2)
    failures, answered, stop = [], [], threading.Event()

    def hammer():
        rest = client.RestClient(port=server.rest_port)
        while not stop.is_set():
            try:
                answered.append(answering_version(
                    rest.recommend("u1", [], "", 2, timestamp=1, label="stable")))
            except Exception as err:  # any failure is what this test counts
                failures.append(repr(err))
        rest.close()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(answered) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        result = CliRunner().invoke(cli.promote, ["--config", str(config_file)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "stable 1 -> 2" in result.output
        promoted_at = len(answered)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
                not answered[promoted_at:] or answered[-1] != 2
                or len(answered) < promoted_at + 20):
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()
    assert failures == []
    assert answered[0] == 1 and answered[-1] == 2
    # One switch: once version 2 answers `stable`, version 1 never does again... per thread;
    # overall the answers split into a run of 1s then mostly 2s.
    assert 1 not in answered[answered.index(2) + 40:]
    assert config.version_labels(str(config_file), "hyperrec") == {"stable": 2, "canary": 2}
    logged = [log for log in request_log.read_prediction_logs(str(tmp_path / "requests"))]
    assert {log.log_metadata.model_spec.version.value for log in logged} == {1, 2}
    assert {log.predict_log.request.model_spec.version_label for log in logged} == {"stable"}


def test_rollback_sends_canary_back_to_stable_and_bad_files_are_named(tmp_path):
    config_file = tmp_path / "models.config"
    write_models_config(config_file, tmp_path, {"stable": 3, "canary": 4})
    result = CliRunner().invoke(cli.rollback, ["--config", str(config_file)])
    assert result.exit_code == 0 and "canary 4 -> 3" in result.output
    assert config.version_labels(str(config_file), "hyperrec") == {"stable": 3, "canary": 3}
    assert [m.name for m in config.read_model_config_file(str(config_file))] == ["hyperrec"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]

    write_models_config(config_file, tmp_path, {"stable": 3})
    result = CliRunner().invoke(cli.promote, ["--config", str(config_file)])
    assert result.exit_code == 1 and "has no 'canary' label" in result.output
    result = CliRunner().invoke(cli.promote, ["--config", str(config_file),
                                              "--model_name", "other"])
    assert result.exit_code == 1 and "no model named 'other'" in result.output
    config_file.write_text("model_config_list { config { nme: 1 } }")
    result = CliRunner().invoke(cli.promote, ["--config", str(config_file)])
    assert result.exit_code == 1 and "Invalid protobuf file" in result.output
