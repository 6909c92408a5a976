"""What one REST connection and one request may cost, and the defaults of the flags that set it.

Kept apart from the HTTP server (which imports TensorFlow through the REST API) so the CLI can
show the defaults without importing it.
"""
from __future__ import annotations

import dataclasses

DEFAULT_MAX_DECOMPRESSED_BYTES = 10 * 1024 * 1024  # TF Serving's ZLib::kMaxUncompressedBytes
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_IDLE_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 1000


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """Byte limits (0: none), timeouts in seconds and the connection cap of the REST port."""
    max_request_bytes: int = 0
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
