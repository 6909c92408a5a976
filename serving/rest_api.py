"""TF Serving's REST API: (method, path, body) -> (HTTP status, JSON), as a coroutine.

Routes exactly as http_rest_api_handler.cc / http_rest_api_util.cc do:
- `POST /v1/models/{name}[/versions/{v}|/labels/{l}]:(predict|classify|regress)`
- `GET  /v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]`
Anything else under /v1/ is `400 {"error": "Malformed request: <METHOD> <path>"}`. Errors
use TF Serving's status mapping (errors.Code) and `{"error": ...}` bodies; the HTTP server
(serving/http_server.py) only moves bytes.

`handle` runs on the HTTP server's event loop. For small requests, parsing and writing JSON
stay on that one thread and only the model call (which blocks, on TensorFlow or on its batch)
goes to the loop's executor threads: one thread doing the Python work is what keeps REST
throughput up under concurrency (with a thread per connection, the threads' fight for the GIL
more than doubled the CPU each request cost at 8 clients). A large body (or a large answer)
is parsed (or written) on an executor thread instead: tens of thousands of instances take
seconds of Python, which on the loop would stall every other connection. An executor thread
holds the GIL only for a switch interval at a time, so the loop keeps serving meanwhile; it
parses member by member (json_parsing.parse_json_in_pieces) because one orjson call would
hold the GIL for the whole document.
"""
from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from typing import Callable, NamedTuple, Optional, Tuple, TypeVar

from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, regression_pb2

from hyperrec.serving import (errors, inference, json_examples, json_parsing, json_request,
                              json_response, model_status, request_budget)
from hyperrec.serving.http_limits import DEFAULT_REQUEST_BUDGET_BYTES
from hyperrec.serving.manager import ModelManager
from hyperrec.serving.request_tracking import RequestTracker
from hyperrec.serving.servable import Servable, Tensors

_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE | re.ASCII)  # RE2's \d, like TF Serving's, is ASCII digits only
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE | re.ASCII)
_MAX_INT64 = (1 << 63) - 1
ENTRYPOINT = "REST"
# Above these sizes JSON work leaves the event loop: about a few milliseconds of Python,
# cheaper than the hand-off to a thread below them.
OFF_LOOP_BODY_BYTES = 256 * 1024
OFF_LOOP_OUTPUT_VALUES = 32 * 1024

Response = Tuple[int, bytes]
T = TypeVar("T")


class _ExamplesApi(NamedTuple):
    """What differs between classify and regress."""
    run: Callable  # (servable, request) -> response
    to_json: Callable  # result -> JSON bytes
    log: Callable  # (tracker, servable, request, response) -> None


_CLASSIFY = _ExamplesApi(inference.classify, json_examples.classification_json,
                         RequestTracker.log_classify)
_REGRESS = _ExamplesApi(inference.regress, json_examples.regression_json,
                        RequestTracker.log_regress)


def _version(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    value = int(text)
    if value > _MAX_INT64:
        raise errors.invalid_argument(f"Failed to convert version: {text} to numeric.")
    return value


def _decode(text: Optional[str]) -> Optional[str]:
    return urllib.parse.unquote(text) if text else None


def _json_bytes(value) -> bytes:
    return json.dumps(value, indent=1).encode("utf-8")


class RestApi:
    """Dispatches REST requests to the manager and the inference functions."""

    def __init__(self, manager: ModelManager, tracker: RequestTracker,
                 request_budget_bytes: int = DEFAULT_REQUEST_BUDGET_BYTES):
        self._manager = manager
        self._tracker = tracker
        self._budget = request_budget_bytes

    async def handle(self, method: str, path: str, body: bytes) -> Response:
        try:
            return 200, await self._dispatch(method, path, body)
        except errors.ServingError as err:
            return errors.http_response(err)
        except RecursionError:
            return errors.http_response(errors.invalid_argument("Request nested too deeply"))
        except Exception as err:  # never let a request take the server down
            return errors.http_response(errors.from_exception(err))

    @staticmethod
    async def _off_loop(function: Callable[..., T], *args) -> T:
        """Runs a blocking call (a model run) on the loop's default executor (the HTTP
        server sizes it), leaving the loop free for other requests meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    async def _dispatch(self, method: str, path: str, body: bytes) -> bytes:
        malformed = errors.invalid_argument(f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICTION_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version_text, label, verb = match.groups()
            name, label, version = _decode(name), _decode(label), _version(version_text)
            cost = request_budget.check_json_body(body, self._budget)  # 413 before parsing
            try:
                if verb == "predict":
                    return await self._predict(name, version, label, body)
                if verb == "classify":
                    return await self._classify(name, version, label, body)
                if verb == "regress":
                    return await self._regress(name, version, label, body)
            finally:
                if cost > request_budget.TRIM_AFTER_BYTES:
                    await self._off_loop(request_budget.release_after, cost)
            raise malformed  # the verb matched case-insensitively; TF Serving then refuses it
        if method == "GET":
            match = _STATUS_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version_text, label, subresource = match.groups()
            name, label, version = _decode(name), _decode(label), _version(version_text)
            if subresource is not None and subresource != "metadata":
                raise malformed
            if not name:
                raise errors.invalid_argument("Missing model name in request.")
            if subresource == "metadata":
                return self._metadata(name, version, label)
            return self._status(name, version, label)
        raise malformed

    # -- prediction APIs -----------------------------------------------------------------------

    async def _predict(self, name: str, version: Optional[int], label: Optional[str],
                       body: bytes) -> bytes:
        with self._tracker.track(name, "predict", ENTRYPOINT):
            if len(body) > OFF_LOOP_BODY_BYTES:
                return await self._off_loop(self._predict_blocking, name, version, label, body)
            servable, signature, inputs, request_format = self._predict_request(
                name, version, label, body)
            outputs = await self._off_loop(servable.run, signature, inputs)
            if sum(array.size for array in outputs.values()) > OFF_LOOP_OUTPUT_VALUES:
                return await self._off_loop(self._predict_answer, servable, signature, inputs,
                                            outputs, request_format, version, label)
            return self._predict_answer(servable, signature, inputs, outputs, request_format,
                                        version, label)

    def _predict_blocking(self, name: str, version: Optional[int], label: Optional[str],
                          body: bytes) -> bytes:
        servable, signature, inputs, request_format = self._predict_request(
            name, version, label, body, json_parsing.parse_json_in_pieces)
        outputs = servable.run(signature, inputs)
        return self._predict_answer(servable, signature, inputs, outputs, request_format,
                                    version, label)

    def _predict_request(self, name: str, version: Optional[int], label: Optional[str],
                         body: bytes, parse: Callable[[bytes], dict] = json_parsing.parse_json
                         ) -> Tuple[Servable, str, Tensors, str]:
        """The body parsed against the addressed servable: (servable, signature, inputs,
        ROW or COLUMNAR)."""
        doc = parse(body)
        signature = json_parsing.signature_name(doc)
        servable = self._manager.servable(name, version, label)
        input_dtypes = servable.input_dtypes(signature)
        if not input_dtypes:
            raise errors.invalid_argument(
                f"Failed to get input map for signature: {signature or 'DEFAULT'}")
        inputs, request_format = json_request.predict_inputs(doc, input_dtypes)
        signature = signature or inference.DEFAULT_SIGNATURE
        inference.predict_signature(servable, signature)
        return servable, signature, inputs, request_format

    def _predict_answer(self, servable: Servable, signature: str, inputs: Tensors,
                        outputs: Tensors, request_format: str, version: Optional[int],
                        label: Optional[str]) -> bytes:
        answer = json_response.predict_outputs(outputs, request_format)
        self._tracker.log_predict_arrays(servable, signature, inputs, outputs, version, label)
        return answer

    def _fill_spec(self, request, name: str, version: Optional[int], label: Optional[str],
                   signature: str) -> None:
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        request.model_spec.signature_name = signature

    async def _classify(self, name: str, version: Optional[int], label: Optional[str],
                        body: bytes) -> bytes:
        with self._tracker.track(name, "classify", ENTRYPOINT):
            return await self._examples_call(
                _CLASSIFY, classification_pb2.ClassificationRequest(), name, version, label, body)

    async def _regress(self, name: str, version: Optional[int], label: Optional[str],
                       body: bytes) -> bytes:
        with self._tracker.track(name, "regress", ENTRYPOINT):
            return await self._examples_call(
                _REGRESS, regression_pb2.RegressionRequest(), name, version, label, body)

    async def _examples_call(self, kind: "_ExamplesApi", request, name: str,
                             version: Optional[int], label: Optional[str], body: bytes) -> bytes:
        """classify or regress: JSON tf.Examples -> request proto -> result JSON, entirely on
        an executor thread when the body is large."""
        def parse(parse_json: Callable[[bytes], dict]) -> Servable:
            doc = parse_json(body)
            self._fill_spec(request, name, version, label, json_parsing.signature_name(doc))
            request.input.CopyFrom(json_examples.classify_regress_input(doc))
            return self._manager.servable(name, version, label)

        def answer(servable: Servable, response) -> bytes:
            text = kind.to_json(response.result)
            kind.log(self._tracker, servable, request, response)
            return text

        def blocking() -> bytes:
            servable = parse(json_parsing.parse_json_in_pieces)
            return answer(servable, kind.run(servable, request))

        if len(body) > OFF_LOOP_BODY_BYTES:
            return await self._off_loop(blocking)
        servable = parse(json_parsing.parse_json)
        return answer(servable, await self._off_loop(kind.run, servable, request))

    # -- model APIs ----------------------------------------------------------------------------

    def _status(self, name: str, version: Optional[int], label: Optional[str]) -> bytes:
        response = model_status.status_response(
            self._manager.version_states(name, version, label))
        return _json_bytes(json_format.MessageToDict(
            response, including_default_value_fields=True))

    def _metadata(self, name: str, version: Optional[int], label: Optional[str]) -> bytes:
        with self._tracker.track(name, "GetModelMetadata", ENTRYPOINT):
            servable = self._manager.servable(name, version, label)
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=[inference.SIGNATURE_DEF_FIELD])
            response = inference.metadata(servable, request)
            options = dict(including_default_value_fields=True, preserving_proto_field_name=True)
            return _json_bytes({
                "model_spec": json_format.MessageToDict(response.model_spec, **options),
                "metadata": {inference.SIGNATURE_DEF_FIELD: json_format.MessageToDict(
                    inference.signature_def_map(response), **options)},
            })

