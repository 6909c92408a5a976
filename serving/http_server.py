"""The REST port: HTTP/1.1 on the standard library, carrying the REST API and the metrics.

Only transport lives here: reading the body (Content-Length or chunked, gzip
Content-Encoding as TF Serving accepts it) under the request-size limit, routing `/v1/...` to
serving/rest_api.py and the configured Prometheus path to the metrics, and writing JSON.
A body over `--rest_api_max_request_bytes` is answered `413 {"error": ...}` and the
connection closed (what libevent, TF Serving's HTTP stack, does with a body over its limit);
the stock server has no limit, so 0 means none here too.
"""
from __future__ import annotations

import http.server
import logging
import re
import socket
import socketserver
import threading
import zlib
from typing import Optional, Tuple

from serving import errors
from serving.config import MonitoringOptions
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import ServingMetrics
from serving.rest_api import RestApi

LOG = logging.getLogger("serving.http")
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
JSON_CONTENT_TYPE = "application/json"
_MAX_DRAIN_BYTES = 16 * 1024 * 1024


class RequestTooLarge(Exception):
    """The request body is over the configured limit."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connection
    server_version = "hyperrec-model-server"
    sys_version = ""
    server: "_HttpServer"

    def setup(self) -> None:
        super().setup()
        # Answers are small and written at once: no Nagle delay waiting for a delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        LOG.debug("%s - %s", self.address_string(), format % args)

    # -- body -----------------------------------------------------------------------------------

    def _read_chunked(self, limit: Optional[int]) -> bytes:
        parts, total = [], 0
        while True:
            size_line = self.rfile.readline(1024)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if limit and total > limit:
                raise RequestTooLarge(total)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _read_body(self) -> bytes:
        limit = self.server.max_request_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked(limit)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError("negative Content-Length")
            if limit and length > limit:
                raise RequestTooLarge(length)
            body = self.rfile.read(length) if length else b""
        if "gzip" in self.headers.get("Content-Encoding", "").lower() and body:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            cap = limit + 1 if limit else 0
            body = inflater.decompress(body, cap)
            if limit and len(body) > limit:
                raise RequestTooLarge(len(body))
        return body

    def _drain_unread_body(self) -> None:
        """Reads (and drops) a moderately oversized body so the client sees our 413, not a
        reset connection; beyond _MAX_DRAIN_BYTES the connection is simply closed."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= _MAX_DRAIN_BYTES:
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    return
                remaining -= len(chunk)

    # -- responses ------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str = JSON_CONTENT_TYPE,
              close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        # Headers and body leave in one write (end_headers() would flush the headers alone).
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.wfile.write(b"".join(self._headers_buffer))
        self._headers_buffer = []

    def _handle(self) -> None:
        method, path = self.command, self.path
        try:
            body = self._read_body()
        except RequestTooLarge as err:
            limit = self.server.max_request_bytes
            message = (f"Request body of {err.args[0]} bytes exceeds the limit of {limit} "
                       "bytes (--rest_api_max_request_bytes)")
            self._drain_unread_body()
            self._send(413, errors.error_json(message), close=True)
            return
        except (ValueError, zlib.error) as err:
            self._send(400, errors.error_json(f"Malformed request body: {err}"), close=True)
            return
        monitoring = self.server.monitoring
        if monitoring.prometheus_enabled and path == monitoring.prometheus_path:
            if method == "GET":
                self._send(200, self.server.metrics.exposition(), METRICS_CONTENT_TYPE)
            else:
                self._send(400, errors.error_json(f"Malformed request: {method} {path}"))
            return
        if _API_PATH.fullmatch(path):
            status, answer = self.server.api.handle(method, path, body)
            self._send(status, answer)
            return
        self._send(404, errors.error_json(f"Not found: {method} {path}"))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


class _HttpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: Tuple[str, int], api: RestApi, metrics: ServingMetrics,
                 monitoring: MonitoringOptions, max_request_bytes: int):
        self.api = api
        self.metrics = metrics
        self.monitoring = monitoring
        self.max_request_bytes = max_request_bytes
        super().__init__(address, _Handler)


class RestServer:
    """The REST listener on `host:port` (port 0 picks a free one), served by a thread."""

    def __init__(self, host: str, port: int, api: RestApi, metrics: ServingMetrics,
                 monitoring: MonitoringOptions, max_request_bytes: int = 0):
        self._server = _HttpServer((host, port), api, metrics, monitoring, max_request_bytes)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="rest-server",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
