"""Infra validation: a candidate is served by a fresh `python -m hyperrec.serving` process
before the Pusher may publish it.

Small SavedModels (tests/standin_models.py's stand-in recommender) stand in for the pipeline's:
a good one, one whose variables file is corrupted (exports, cannot load), one whose
`recommend` answers with the wrong shape, and one too large for the memory limit. The
executors run directly (no pipeline): the InfraValidator's, then our Pusher's with the
evaluators' blessing set, so only the infra blessing decides. None of the broken ones is
pushed, each refusal names its reason, and the model pushed first keeps serving.
"""
import json
import os

import hyperrec.components  # noqa: F401  (Keras env before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tfx.types import standard_artifacts, standard_component_specs

from hyperrec.components import pusher
from hyperrec.components.infra_validation import component as infra
from hyperrec.components.infra_validation import probe
from hyperrec.schemas import features
import standin_models

MODEL_NAME = "hyperrec"


class WrongShapeRecommender(standin_models.FakeRecommender):
    """`recommend` answers its top-k flattened: [batch * k] instead of [batch, k]."""

    def signatures(self) -> dict:
        inner = self.recommend

        @tf.function(input_signature=inner.input_signature)
        def flat(user_id, history_item_ids, device, timestamp, k):
            answer = inner(user_id, history_item_ids, device, timestamp, k)
            return {name: tf.reshape(value, [-1]) for name, value in answer.items()}
        return {**super().signatures(), features.RECOMMEND: flat}


class LargeRecommender(standin_models.FakeRecommender):
    """The stand-in recommender carrying a `megabytes` MiB weight (restored when loaded)."""

    def __init__(self, megabytes: int):
        super().__init__()
        self.ballast = tf.Variable(tf.ones([megabytes * 2 ** 18], tf.float32))


def _warmup(version_dir: str) -> None:
    """A recommend request for two users, as the pipeline's export records them."""
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = features.RECOMMEND
    for name, value in {features.USER_ID: np.array([b"u1", b"u2"], object),
                        features.HISTORY: np.array([[b"item-03", b""], [b"", b""]], object),
                        features.DEVICE: np.array([b"ios", b"web"], object),
                        features.TIMESTAMP: np.array([1700000000, 1700000000], np.int64),
                        features.K: np.array([5, 5], np.int32)}.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    standin_models.write_warmup_file(version_dir, [prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))])


def _model_artifact(root: str, module: tf.Module) -> standard_artifacts.Model:
    """A Trainer-like Model artifact (its SavedModel in Format-Serving) with warmup."""
    model = standard_artifacts.Model()
    model.uri = root
    model.id = abs(hash(root)) % 100000
    serving = os.path.join(root, "Format-Serving")
    tf.saved_model.save(module, serving, signatures=module.signatures())
    _warmup(serving)
    return model


def _blessed_by_evaluators(root: str) -> standard_artifacts.ModelBlessing:
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = root
    blessing.set_int_custom_property("blessed", 1)
    return blessing


def _infra_validate(model, root: str, **settings) -> standard_artifacts.InfraBlessing:
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = root
    os.makedirs(root, exist_ok=True)
    infra.Executor().Do({infra.MODEL: [model]}, {infra.BLESSING: [blessing]},
                        {infra.CONFIG: infra.executor_config(model_name=MODEL_NAME,
                                                             requests=20, **settings)})
    return blessing


def _push(model, infra_blessing, base: str, root: str) -> standard_artifacts.PushedModel:
    pushed = standard_artifacts.PushedModel()
    pushed.uri = root
    inputs = {standard_component_specs.MODEL_KEY: [model],
              standard_component_specs.MODEL_BLESSING_KEY: [
                  _blessed_by_evaluators(root + "-blessing")]}
    if infra_blessing is not None:
        inputs[standard_component_specs.INFRA_BLESSING_KEY] = [infra_blessing]
    destination = json.dumps({"filesystem": {"base_directory": base}})
    pusher.Executor().Do(inputs, {standard_component_specs.PUSHED_MODEL_KEY: [pushed]},
                         {standard_component_specs.PUSH_DESTINATION_KEY: destination})
    return pushed


def _report(blessing) -> dict:
    with open(os.path.join(blessing.uri, infra.REPORT_FILE)) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def served_good_model(tmp_path_factory):
    """The good candidate validated, pushed and served by an in-process server."""
    from hyperrec.serving.server import ModelServer
    root = tmp_path_factory.mktemp("infra")
    model = _model_artifact(str(root / "good"), standin_models.FakeRecommender(offset=0.5))
    blessing = _infra_validate(model, str(root / "good-infra"))
    base = str(root / "serving")
    pushed = _push(model, blessing, base, str(root / "good-push"))
    server = ModelServer(standin_models.rest_only_options(MODEL_NAME, base, poll_seconds=0.2)).start()
    yield root, blessing, pushed, base, server
    server.stop()


def _recommend_over_rest(server) -> dict:
    from hyperrec.serving.client import RestClient
    client = RestClient(port=server.rest_port, model_name=MODEL_NAME)
    try:
        return {"status": client.status(),
                "items": client.recommend("u1", ["item-01"], "ios", k=3, timestamp=1)}
    finally:
        client.close()


def test_a_good_candidate_is_infra_blessed_with_its_numbers_and_pushed(served_good_model):
    _, blessing, pushed, base, server = served_good_model
    assert blessing.get_int_custom_property("blessed") == 1, blessing.get_string_custom_property(
        "reason")
    assert os.path.exists(os.path.join(blessing.uri, infra.BLESSED_FILE))
    report = _report(blessing)
    for number in ("load_seconds", "first_request_ms", "rest_p50_ms", "rest_p99_ms",
                   "grpc_p50_ms", "grpc_p99_ms", "peak_rss_mb"):
        assert report[number] > 0, number
        assert blessing.get_float_custom_property(number) == pytest.approx(report[number])
    assert report["rest_p50_ms"] <= report["rest_p99_ms"]
    assert report["signatures"] == [features.RECOMMEND, features.SERVING_DEFAULT]
    assert report["warmup_requests"] == 1
    assert "REST and gRPC answers equal the in-process SavedModel's" in report["checks"]
    assert pushed.get_int_custom_property("pushed") == 1
    assert pusher.pushed_versions(base) == [int(pushed.get_string_custom_property(
        "pushed_version"))]
    answer = _recommend_over_rest(server)
    assert [item for item, _ in answer["items"]] == ["item-00", "item-02", "item-03"]


def _corrupt_variables(model) -> None:
    variables = os.path.join(model.uri, "Format-Serving", "variables")
    data = [name for name in os.listdir(variables) if name.startswith("variables.data")]
    with open(os.path.join(variables, data[0]), "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        handle.write(b"\xde\xad\xbe\xef" * (size // 4 + 1))


def test_broken_candidates_are_refused_with_their_reason_and_never_pushed(served_good_model):
    root, good_blessing, good_pushed, base, server = served_good_model
    good_peak = good_blessing.get_float_custom_property("peak_rss_mb")
    before = pusher.pushed_versions(base)

    corrupted = _model_artifact(str(root / "corrupted"), standin_models.FakeRecommender(offset=9.0))
    _corrupt_variables(corrupted)
    wrong_shape = _model_artifact(str(root / "wrong-shape"), WrongShapeRecommender(offset=9.0))
    # Twice the good model's whole footprint in one weight, against a limit 200 MiB above it.
    too_large = _model_artifact(str(root / "too-large"),
                                LargeRecommender(megabytes=int(good_peak) + 400))
    cases = {"corrupted": (corrupted, {}, "load: the server could not load the model"),
             "wrong_shape": (wrong_shape, {}, "shape: signature 'recommend' output"),
             "too_large": (too_large, {"memory_limit_mb": good_peak + 200},
                           "memory: peak RSS")}
    for name, (model, settings, reason) in cases.items():
        blessing = _infra_validate(model, str(root / f"{name}-infra"), **settings)
        assert blessing.get_int_custom_property("blessed") == 0, name
        assert os.path.exists(os.path.join(blessing.uri, infra.NOT_BLESSED_FILE)), name
        assert blessing.get_string_custom_property("reason").startswith(reason), (
            name, blessing.get_string_custom_property("reason"))
        pushed = _push(model, blessing, base, str(root / f"{name}-push"))
        assert pushed.get_int_custom_property("pushed") == 0, name
        assert pusher.pushed_versions(base) == before, name
        if name == "wrong_shape":
            assert "first dimension must be the batch" in _report(blessing)["reason"]

    # The last pushed model keeps serving: the same version, the same answers.
    answer = _recommend_over_rest(server)
    statuses = answer["status"]["model_version_status"]
    assert [(int(s["version"]), s["state"]) for s in statuses] == [(before[-1], "AVAILABLE")]
    assert [item for item, _ in answer["items"]] == ["item-00", "item-02", "item-03"]


def test_the_pusher_refuses_a_model_without_an_infra_blessing(served_good_model, tmp_path):
    _, _, _, base, _ = served_good_model
    before = pusher.pushed_versions(base)
    model = _model_artifact(str(tmp_path / "unvalidated"), standin_models.FakeRecommender(offset=3.0))
    pushed = _push(model, None, base, str(tmp_path / "push"))
    assert pushed.get_int_custom_property("pushed") == 0
    assert pusher.pushed_versions(base) == before


def test_a_candidate_the_evaluators_refused_is_not_served(tmp_path):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "never-read")
    refused = standard_artifacts.ModelBlessing()
    refused.uri = str(tmp_path / "refused")
    refused.set_int_custom_property("blessed", 0)
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "infra")
    infra.Executor().Do({infra.MODEL: [model], infra.MODEL_BLESSING: [refused]},
                        {infra.BLESSING: [blessing]}, {infra.CONFIG: infra.executor_config()})
    assert blessing.get_int_custom_property("blessed") == 0
    assert blessing.get_string_custom_property("reason").startswith("not_evaluated:")


def test_shape_and_value_checks_name_what_differs():
    call = probe.Call(features.RECOMMEND, {features.K: np.array([3, 3], np.int32)})

    class Info:
        def __init__(self, dims):
            self.tensor_shape = tf.TensorShape(dims).as_proto()

    signature = type("Sig", (), {"outputs": {"scores": Info([None, None])}})()
    assert probe.shape_problem(call, signature, {"scores": np.zeros((2, 3))}) is None
    assert "batch of 2" in probe.shape_problem(call, signature, {"scores": np.zeros(6)})
    assert "<= k" in probe.shape_problem(call, signature, {"scores": np.zeros((2, 4))})
    expected = {"scores": np.array([1.0, 2.0], np.float32), "ids": np.array([b"a", b"b"], object)}
    assert probe.difference(expected, {"scores": np.array([1.0, 2.0]),
                                       "ids": np.array([b"a", b"b"], object)}, 1e-4, 1e-5) is None
    assert "ids" in probe.difference(expected, {"scores": np.array([1.0, 2.0]),
                                                "ids": np.array([b"a", b"c"], object)}, 1e-4, 1e-5)
    assert "differ by up to" in probe.difference(
        expected, {"scores": np.array([1.0, 2.5]), "ids": expected["ids"]}, 1e-4, 1e-5)


def test_the_limits_come_from_the_run_config():
    import dataclasses
    import json as json_lib

    from hyperrec.components import config as config_lib
    from hyperrec.components.infra_validation import component as infra_component
    from hyperrec.components.infra_validation import probe as infra_probe

    config = config_lib.load("tiny", ["infra_validation.memory_limit_mb=123",
                                      "infra_validation.requests=7"])
    property_ = infra_component.executor_config(
        "digest", model_name="m", **dataclasses.asdict(config.infra_validation))
    settings = config_lib.from_dict(infra_probe.Settings, json_lib.loads(property_))
    assert (settings.memory_limit_mb, settings.requests, settings.model_name) == (123, 7, "m")
