"""Versions: discovery, readiness, version policy, labels, warmup, failed loads, reloads."""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import shutil
import textwrap
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc
from tensorflow_serving.apis import prediction_log_pb2

from hyperrec.serving import config, errors, version_scanner
import standin_models
from hyperrec.serving.config import ModelSettings, VersionPolicy
from hyperrec.serving.manager import ModelManager
from hyperrec.serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Version directories built once: offsets 2 (v1), 3 (v2), 4 (v3)."""
    root = tmp_path_factory.mktemp("built")
    return {offset: standin_models.save_half_plus_two(str(root / str(offset)), offset=float(offset))
            for offset in (2, 3, 4)}


def answer(manager, name="m", version=None, label=None, x=0.0):
    servable = manager.servable(name, version, label)
    return float(servable.run("", {"x": np.array([x], np.float32)})["y"][0])


def states(manager, name="m"):
    return {v: s.state for v, s in manager.version_states(name).items()}


def make_manager(base, policy=VersionPolicy(), labels=(), **kwargs):
    kwargs.setdefault("poll_seconds", 0)
    return ModelManager([ModelSettings("m", str(base), policy, tuple(labels))], **kwargs)


# ---- policy and discovery -----------------------------------------------------------------

def test_version_policy_choices():
    ready = [3, 1, 10, 2]
    assert VersionPolicy().choose(ready) == [10]
    assert VersionPolicy("latest", num_versions=2).choose(ready) == [10, 3]
    assert VersionPolicy("all").choose(ready) == [10, 3, 2, 1]
    assert VersionPolicy("specific", versions=(2, 7)).choose(ready) == [2]


def test_scan_sees_integer_dirs_with_a_saved_model_only(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    shutil.copytree(built[2], tmp_path / "abc")
    shutil.copytree(built[2], tmp_path / ".tmp-2")
    (tmp_path / "3").mkdir()  # no saved_model.pb yet
    (tmp_path / "4").write_text("a file, not a directory")
    assert set(version_scanner.scan(str(tmp_path))) == {1}
    assert version_scanner.scan(str(tmp_path / "missing")) == {}


def test_a_directory_is_ready_once_it_stops_changing(tmp_path, built):
    tracker = version_scanner.ReadinessTracker()
    shutil.copytree(built[2], tmp_path / "1")
    assert tracker.observe(version_scanner.scan(str(tmp_path))) == {}  # first sight
    (tmp_path / "1" / "variables" / "late-file").write_bytes(b"x" * 10)  # still copying
    assert tracker.observe(version_scanner.scan(str(tmp_path))) == {}
    assert set(tracker.observe(version_scanner.scan(str(tmp_path)))) == {1}  # unchanged: ready


def test_latest_policy_serves_the_newest_and_unloads_the_old(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    manager = make_manager(tmp_path)
    manager.start()
    try:
        assert answer(manager) == 2.0
        standin_models.push_version(built[3], str(tmp_path), 2)
        manager.reconcile()  # first sight of 2: not ready yet, 1 keeps serving
        assert answer(manager) == 2.0
        manager.reconcile()
        assert answer(manager) == 3.0
        assert states(manager) == {2: "AVAILABLE", 1: "END"}
        with pytest.raises(errors.ServingError) as raised:
            manager.servable("m", version=1)
        assert raised.value.code == errors.Code.NOT_FOUND
    finally:
        manager.stop()


def test_touching_a_served_version_does_not_make_it_flap(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    shutil.copytree(built[3], tmp_path / "2")
    manager = make_manager(tmp_path)
    manager.start()
    try:
        assert states(manager) == {2: "AVAILABLE"}
        (tmp_path / "2" / "assets.extra").mkdir()
        (tmp_path / "2" / "assets.extra" / "note.txt").write_text("touched while served")
        manager.reconcile()
        assert states(manager) == {2: "AVAILABLE"} and answer(manager) == 3.0
    finally:
        manager.stop()


def test_latest_two_and_labels(tmp_path, built):
    for version, offset in ((1, 2), (2, 3), (3, 4)):
        shutil.copytree(built[offset], tmp_path / str(version))
    manager = make_manager(tmp_path, VersionPolicy("latest", num_versions=2),
                           labels=[("stable", 2), ("old", 1)])
    manager.start()
    try:
        assert states(manager) == {3: "AVAILABLE", 2: "AVAILABLE"}
        assert answer(manager) == 4.0
        assert answer(manager, version=2) == 3.0
        assert answer(manager, label="stable") == 3.0
        with pytest.raises(errors.ServingError) as raised:
            manager.servable("m", label="old")  # label of a version that is not served
        assert raised.value.code == errors.Code.NOT_FOUND
        with pytest.raises(errors.ServingError) as raised:
            manager.servable("m", label="nope")
        assert raised.value.code == errors.Code.INVALID_ARGUMENT
    finally:
        manager.stop()


# ---- failures ------------------------------------------------------------------------------

def test_a_corrupt_version_leaves_the_old_one_serving_and_reports_why(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    manager = make_manager(tmp_path)
    manager.start()
    try:
        standin_models.write_corrupt_version(str(tmp_path / "2"))
        manager.reconcile()
        manager.reconcile()
        assert answer(manager) == 2.0
        status = manager.version_states("m")
        assert status[1].state == "AVAILABLE"
        assert status[2].state == "END" and status[2].error_code == errors.Code.DATA_LOSS
        assert "Could not parse SavedModel" in status[2].error_message
        manager.reconcile()  # the same broken contents are not retried
        assert manager.version_states("m")[2].error_code == errors.Code.DATA_LOSS

        # A fixed push of the same version number (new contents) is tried again.
        shutil.rmtree(tmp_path / "2")
        standin_models.push_version(built[3], str(tmp_path), 2)
        manager.reconcile()
        manager.reconcile()
        assert answer(manager) == 3.0
        assert states(manager) == {2: "AVAILABLE", 1: "END"}
    finally:
        manager.stop()


def test_a_restart_with_a_corrupt_latest_serves_the_latest_good_version(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    shutil.copytree(built[3], tmp_path / "2")
    standin_models.write_corrupt_version(str(tmp_path / "3"))
    manager = make_manager(tmp_path)
    manager.start()
    try:
        assert answer(manager) == 3.0
        assert states(manager) == {3: "END", 2: "AVAILABLE"}
    finally:
        manager.stop()


def test_a_version_whose_variables_are_missing_fails_to_load(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    shutil.copytree(built[3], tmp_path / "2")
    shutil.rmtree(tmp_path / "2" / "variables")
    manager = make_manager(tmp_path)
    manager.start()
    try:
        assert answer(manager) == 2.0
        assert manager.version_states("m")[2].error_code != errors.Code.OK
    finally:
        manager.stop()


# ---- warmup --------------------------------------------------------------------------------

def predict_log(values):
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(values, np.float32)))
    return log


def test_warmup_requests_are_replayed_before_a_version_serves(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    standin_models.write_warmup_file(str(tmp_path / "1"), [predict_log([1.0]), predict_log([2.0, 3.0])])
    manager = make_manager(tmp_path)
    manager.start()
    try:
        assert manager.servable("m").warmup_records == 2
    finally:
        manager.stop()


def test_a_failing_warmup_request_fails_the_load(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    shutil.copytree(built[3], tmp_path / "2")
    bad = predict_log([1.0])
    bad.predict_log.request.model_spec.signature_name = "nope"
    standin_models.write_warmup_file(str(tmp_path / "2"), [bad])
    manager = make_manager(tmp_path)
    manager.start()
    try:
        assert answer(manager) == 2.0
        status = manager.version_states("m")[2]
        assert status.state == "END" and status.error_code == errors.Code.FAILED_PRECONDITION
    finally:
        manager.stop()


def test_warmup_can_be_disabled(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "1")
    standin_models.write_warmup_file(str(tmp_path / "1"), [predict_log([1.0])])
    manager = make_manager(tmp_path, enable_warmup=False)
    manager.start()
    try:
        assert manager.servable("m").warmup_records == 0
    finally:
        manager.stop()


# ---- the polling server --------------------------------------------------------------------

def test_the_server_polls_the_file_system(tmp_path, built):
    base = tmp_path / "m"
    shutil.copytree(built[2], base / "1")
    options = ServerOptions(models=config.single_model("m", str(base)), grpc_port=None,
                            rest_port=None, poll_seconds=0.05)
    with ModelServer(options) as server:
        standin_models.push_version(built[3], str(base), 2)
        deadline = time.monotonic() + 30
        while answer(server.manager) != 3.0:
            assert time.monotonic() < deadline, "new version never served"
            time.sleep(0.05)


def write_config(path, base, labels):
    label_text = "".join(f'version_labels {{ key: "{k}" value: {v} }}\n' for k, v in labels)
    path.write_text(textwrap.dedent(f"""\
        model_config_list {{
          config {{
            name: "m"
            base_path: "{base}"
            model_version_policy {{ all {{}} }}
        """) + label_text + "  }\n}\n")


def test_config_file_polling_moves_labels(tmp_path, built):
    base = tmp_path / "m"
    shutil.copytree(built[2], base / "1")
    shutil.copytree(built[3], base / "2")
    config_file = tmp_path / "models.config"
    write_config(config_file, base, [("stable", 1)])
    options = ServerOptions(
        models=config.read_model_config_file(str(config_file)), grpc_port=None, rest_port=None,
        poll_seconds=0, config_poll_seconds=0.05,
        config_source=lambda: config.read_model_config_file(str(config_file)))
    with ModelServer(options) as server:
        assert answer(server.manager, label="stable") == 2.0
        write_config(config_file, base, [("stable", 2)])
        deadline = time.monotonic() + 30
        while answer(server.manager, label="stable") != 3.0:
            assert time.monotonic() < deadline, "label never moved"
            time.sleep(0.05)


def test_grpc_reload_config_adds_and_removes_models(tmp_path, built):
    shutil.copytree(built[2], tmp_path / "a" / "1")
    shutil.copytree(built[3], tmp_path / "b" / "1")
    options = ServerOptions(models=config.single_model("a", str(tmp_path / "a")), grpc_port=0,
                            rest_port=None, poll_seconds=0)
    with ModelServer(options) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        request = model_management_pb2.ReloadConfigRequest()
        model = request.config.model_config_list.config.add()
        model.name, model.base_path, model.model_platform = "b", str(tmp_path / "b"), "tensorflow"
        response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=60)
        assert response.status.error_code == 0
        assert server.manager.model_names() == ["b"]
        assert answer(server.manager, "b") == 3.0
        channel.close()


def test_config_files_are_validated(tmp_path):
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { name: 'x' base_pth: '/y' } }")
    with pytest.raises(config.ConfigError, match="Invalid protobuf file"):
        config.read_model_config_file(str(bad))
    twice = tmp_path / "twice.config"
    twice.write_text("model_config_list { config { name: 'x' base_path: '/y' } "
                     "config { name: 'x' base_path: '/z' } }")
    with pytest.raises(config.ConfigError, match="multiple times"):
        config.read_model_config_file(str(twice))
    with pytest.raises(config.ConfigError):
        config.single_model("x", "")

