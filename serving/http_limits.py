"""What one REST connection and one request may cost, and the defaults of the flags that set it.

`request_budget_bytes` is the per-request budget of serving/request_budget.py, which gRPC
shares; the rest is the REST port's.

Kept apart from the HTTP server (which imports TensorFlow through the REST API) so the CLI can
show the defaults without importing it.
"""
from __future__ import annotations

import dataclasses

DEFAULT_MAX_DECOMPRESSED_BYTES = 10 * 1024 * 1024  # TF Serving's ZLib::kMaxUncompressedBytes
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_IDLE_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_IDLE_CONNECTIONS = 500
DEFAULT_PRESSURE_IDLE_TIMEOUT_S = 1.0
DEFAULT_REQUEST_BUDGET_BYTES = 128 * 1024 * 1024
REQUEST_BUDGET_FLAG = "--request_budget_bytes"


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Byte limits (0: none), timeouts in seconds and the connection caps of the REST port.

    `max_connections` counts every open connection; a new one beyond it first closes the
    oldest idle one, and only when none is idle is it answered 503. `max_idle_connections`
    counts connections waiting for a request (new ones before their first byte, keep-alive
    ones between requests): beyond it the oldest idle one is closed, and above half of it
    the idle timeout shrinks, down to `pressure_idle_timeout_s` when full.
    """
    max_request_bytes: int = 0
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_idle_connections: int = DEFAULT_MAX_IDLE_CONNECTIONS
    pressure_idle_timeout_s: float = DEFAULT_PRESSURE_IDLE_TIMEOUT_S
    request_budget_bytes: int = DEFAULT_REQUEST_BUDGET_BYTES
