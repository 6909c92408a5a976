"""TF Serving's error model: a canonical status code plus a message, shared by REST and gRPC.

Every failure inside the server is a `ServingError` carrying one of the canonical codes
(the `tensorflow.error.Code` / gRPC status names). The REST layer turns it into TF Serving's
HTTP status and `{"error": "..."}` body; the gRPC layer aborts the call with the same code,
so a client sees the same outcome whichever API it speaks.
"""
from __future__ import annotations

import enum
import functools
import json
from typing import Tuple


class Code(enum.Enum):
    """Canonical status codes: name, gRPC number and the HTTP status TF Serving's REST maps to.

    The HTTP column is TF Serving's `ToHTTPStatusCode` (model_servers/http_server.cc).
    """
    OK = (0, 200)
    CANCELLED = (1, 499)
    UNKNOWN = (2, 500)
    INVALID_ARGUMENT = (3, 400)
    DEADLINE_EXCEEDED = (4, 504)
    NOT_FOUND = (5, 404)
    ALREADY_EXISTS = (6, 409)
    PERMISSION_DENIED = (7, 403)
    RESOURCE_EXHAUSTED = (8, 429)
    FAILED_PRECONDITION = (9, 400)
    ABORTED = (10, 409)
    OUT_OF_RANGE = (11, 400)
    UNIMPLEMENTED = (12, 501)
    INTERNAL = (13, 500)
    UNAVAILABLE = (14, 503)
    DATA_LOSS = (15, 500)
    UNAUTHENTICATED = (16, 401)

    @property
    def number(self) -> int:
        return self.value[0]

    @property
    def http_status(self) -> int:
        return self.value[1]

    @classmethod
    def from_number(cls, number: int) -> "Code":
        for code in cls:
            if code.number == number:
                return code
        return cls.UNKNOWN


class ServingError(Exception):
    """A request or load failure with its canonical code (what TF Serving calls a Status)."""

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


# One constructor per status the server answers with: invalid_argument("...") etc.
invalid_argument = functools.partial(ServingError, Code.INVALID_ARGUMENT)
not_found = functools.partial(ServingError, Code.NOT_FOUND)
failed_precondition = functools.partial(ServingError, Code.FAILED_PRECONDITION)
unavailable = functools.partial(ServingError, Code.UNAVAILABLE)
unimplemented = functools.partial(ServingError, Code.UNIMPLEMENTED)
internal = functools.partial(ServingError, Code.INTERNAL)


def from_exception(error: BaseException) -> ServingError:
    """Maps any exception raised while serving to a ServingError.

    TensorFlow's own errors keep their code (a graph that rejects its input is
    INVALID_ARGUMENT, exactly as in TF Serving); Python-level argument errors from calling a
    signature are the caller's fault; anything else is INTERNAL.
    """
    if isinstance(error, ServingError):
        return error
    error_code = getattr(error, "error_code", None)  # tf.errors.OpError without importing TF
    if isinstance(error_code, int) and hasattr(error, "message"):
        return ServingError(Code.from_number(error_code), str(error.message))
    if isinstance(error, (TypeError, ValueError, OverflowError)):
        return ServingError(Code.INVALID_ARGUMENT, str(error))
    return ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}")


def error_json(message: str) -> bytes:
    """TF Serving's REST error body: a JSON object with one `error` string."""
    return json.dumps({"error": message}).encode("utf-8")


def http_response(error: ServingError) -> Tuple[int, bytes]:
    """The (HTTP status, JSON body) TF Serving's REST API answers a failed request with (an
    error class may name its own status: the request budget's is 413)."""
    return getattr(error, "http_status", error.code.http_status), error_json(error.message)
