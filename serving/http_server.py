"""The REST port: HTTP/1.1 on one asyncio event loop, carrying the REST API and the metrics.

Only transport lives here: reading the request (Content-Length or chunked body, gzip
Content-Encoding as TF Serving accepts it) under the request-size limit, routing `/v1/...` to
serving/rest_api.py and the configured Prometheus path to the metrics, and writing JSON.
A body over `--rest_api_max_request_bytes` is answered `413 {"error": ...}` and the
connection closed (what libevent, TF Serving's HTTP stack, does with a body over its limit);
the stock server has no limit, so 0 means none here too. Malformed HTTP (request line,
version, header lines, body framing) is answered with a 4xx `{"error": ...}` and a closed
connection.

Why one loop and not a thread per connection: every REST request costs about a millisecond
of GIL-bound Python (JSON in and out). Spread over a thread per connection, the threads'
fight for the GIL more than doubled that cost at 8 clients and made throughput fall as
clients were added. Here the loop thread does all of that work, and only the model calls,
which block on TensorFlow or on their batch, run on the loop's executor: `num_threads`
threads, which is also the most REST requests one batch can gather.
"""
from __future__ import annotations

import asyncio
import email.utils
import http
import http.client
import io
import logging
import re
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Optional, Tuple

from hyperrec.serving import errors
from hyperrec.serving.config import MonitoringOptions
from hyperrec.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hyperrec.serving.metrics import ServingMetrics
from hyperrec.serving.rest_api import RestApi

LOG = logging.getLogger("serving.http")
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
_HTTP_VERSION = re.compile(r"HTTP/(\d+)\.(\d+)")
JSON_CONTENT_TYPE = "application/json"
SERVER_NAME = "hyperrec-model-server"
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"})
DEFAULT_NUM_THREADS = 64
_MAX_LINE_BYTES = 65536  # request line and each header line (http.server's limit)
_MAX_HEADERS = 100  # http.client's limit
_MAX_DRAIN_BYTES = 16 * 1024 * 1024
_SHUTDOWN_GRACE_S = 5.0
_LINGER_S = 2.0


class RequestTooLarge(Exception):
    """The request body is over the configured limit."""


class BadRequest(Exception):
    """Malformed HTTP: answered with `status` and `{"error": message}`, connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Request:
    """One parsed request head."""

    __slots__ = ("method", "path", "headers", "keep_alive")

    def __init__(self, method: str, path: str, headers: http.client.HTTPMessage,
                 keep_alive: bool):
        self.method = method
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive


async def _read_line(reader: asyncio.StreamReader, what: str, status: int) -> bytes:
    try:
        return await reader.readline()
    except ValueError as err:  # over the reader's limit (_MAX_LINE_BYTES)
        raise BadRequest(status, f"{what} too long") from err


async def read_request_head(reader: asyncio.StreamReader) -> Optional[_Request]:
    """The request line and headers; None when the client closed the connection between
    requests (or sent nothing but a blank line, which http.server also answers by closing)."""
    line = await _read_line(reader, "Request line", 414)
    if not line.endswith(b"\n"):
        return None
    request_line = line.decode("iso-8859-1").rstrip("\r\n")
    words = request_line.split()
    if not words:
        return None
    if len(words) != 3:
        raise BadRequest(400, f"Bad request syntax ({request_line!r})")
    method, target, version_text = words
    version = _HTTP_VERSION.fullmatch(version_text)
    if not version:
        raise BadRequest(400, f"Bad request version ({version_text!r})")
    major, minor = int(version.group(1)), int(version.group(2))
    if major >= 2:
        raise BadRequest(505, f"Invalid HTTP version ({version_text})")
    block = []
    while True:
        header_line = await _read_line(reader, "Header line", 431)
        if not header_line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(header_line, None)
        if header_line in (b"\r\n", b"\n"):
            break
        block.append(header_line)
        if len(block) > _MAX_HEADERS:
            raise BadRequest(431, "Too many headers")
    headers = http.client.parse_headers(io.BytesIO(b"".join(block) + b"\r\n"))
    connection = headers.get("Connection", "").lower()
    keep_alive = (major, minor) >= (1, 1)
    if "close" in connection:
        keep_alive = False
    elif "keep-alive" in connection:
        keep_alive = True
    if target.startswith("//"):  # as http.server: never an absolute URL's authority
        target = "/" + target.lstrip("/")
    return _Request(method, target, headers, keep_alive)


async def read_body(reader: asyncio.StreamReader, headers: http.client.HTTPMessage,
                    limit: int) -> bytes:
    """The body by Content-Length or chunked framing, gunzipped when so encoded, at most
    `limit` bytes (0: no limit) before and after decompression."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        parts, total = [], 0
        while True:
            size_line = await _read_line(reader, "Chunk size line", 400)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while await _read_line(reader, "Trailer line", 400) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            total += size
            if limit and total > limit:
                raise RequestTooLarge(total)
            parts.append(await reader.readexactly(size))
            await _read_line(reader, "Chunk end", 400)
        body = b"".join(parts)
    else:
        length = int(headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if limit and length > limit:
            raise RequestTooLarge(length)
        body = await reader.readexactly(length) if length else b""
    if "gzip" in headers.get("Content-Encoding", "").lower() and body:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        body = inflater.decompress(body, limit + 1 if limit else 0)
        if limit and len(body) > limit:
            raise RequestTooLarge(len(body))
    return body


class _HttpDate:
    """The Date header's value, formatted once a second."""

    def __init__(self):
        self._second, self._text = -1, ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._text = now, email.utils.formatdate(now, usegmt=True)
        return self._text


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


class RestServer:
    """The REST listener on `host:port` (port 0 picks a free one), served by one event-loop
    thread; model calls run on `num_threads` executor threads."""

    def __init__(self, host: str, port: int, api: RestApi, metrics: ServingMetrics,
                 monitoring: MonitoringOptions, max_request_bytes: int = 0,
                 num_threads: int = DEFAULT_NUM_THREADS):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Bound here, not in the loop, so a taken port fails the constructor like it used to.
        self._socket = socket.create_server((host, port), family=family, backlog=128)
        self.host = host
        self.port = self._socket.getsockname()[1]
        self.api = api
        self.metrics = metrics
        self.monitoring = monitoring
        self.max_request_bytes = max_request_bytes
        self._loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(max(1, num_threads), thread_name_prefix="rest-model")
        self._loop.set_default_executor(self._executor)
        self._server: Optional[asyncio.AbstractServer] = None
        self._connections: Dict[asyncio.Task, bool] = {}  # task -> busy with a request
        self._closing = False
        self._date = _HttpDate()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rest-server", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._started.wait(timeout=30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._serve_connection, sock=self._socket, limit=_MAX_LINE_BYTES))
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def stop(self) -> None:
        """Stops accepting, lets requests in flight finish (up to a few seconds), closes idle
        keep-alive connections and ends the loop thread."""
        if not self._thread.is_alive():
            self._socket.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(
                timeout=_SHUTDOWN_GRACE_S + 5)
        except Exception:  # a stuck shutdown must not keep the process from stopping
            LOG.exception("REST server shutdown did not finish cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._executor.shutdown(wait=False)

    async def _shutdown(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        deadline = self._loop.time() + _SHUTDOWN_GRACE_S
        while any(self._connections.values()) and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2)

    # -- connections ----------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections[task] = False
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Answers are written at once: no Nagle delay waiting for a delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        linger = False
        try:
            while not self._closing and await self._serve_request(task, reader, writer):
                pass
            linger = True
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request: there is nobody to answer
        except asyncio.CancelledError:
            pass  # shutting down
        except Exception:  # a bug here must cost one connection, never the loop
            LOG.exception("REST connection failed")
        finally:
            try:
                if linger and not self._closing:
                    await self._lingering_close(reader, writer)
            finally:  # still listed while lingering, so a shutdown can cancel it
                self._connections.pop(task, None)
                writer.close()

    @staticmethod
    async def _lingering_close(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        """Half-closes, then reads (and drops) what the client still sends for a moment (the
        rest of a refused body, up to _MAX_DRAIN_BYTES): closing a socket with unread input
        sends a reset, which can destroy the answer (a 413, a 431) before the client has
        read it."""
        try:
            if writer.can_write_eof():
                writer.write_eof()
            deadline = asyncio.get_running_loop().time() + _LINGER_S
            dropped = 0
            while dropped < _MAX_DRAIN_BYTES:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return
                chunk = await asyncio.wait_for(reader.read(1 << 16), left)
                if not chunk:
                    return
                dropped += len(chunk)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return

    async def _serve_request(self, task: asyncio.Task, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> bool:
        """Reads, answers and writes one request; False when the connection should close."""
        try:
            request = await read_request_head(reader)
        except BadRequest as err:
            await self._send(writer, err.status, errors.error_json(str(err)), close=True)
            return False
        if request is None:
            return False
        self._connections[task] = True
        try:
            return await self._answer(reader, writer, request)
        finally:
            self._connections[task] = False

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      request: _Request) -> bool:
        method, path = request.method, request.path
        if method not in METHODS:
            await self._send(writer, 501, errors.error_json(f"Unsupported method ({method!r})"),
                             close=True)
            return False
        if request.headers.get("Expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await read_body(reader, request.headers, self.max_request_bytes)
        except RequestTooLarge as err:
            message = (f"Request body of {err.args[0]} bytes exceeds the limit of "
                       f"{self.max_request_bytes} bytes (--rest_api_max_request_bytes)")
            await self._send(writer, 413, errors.error_json(message), close=True)
            return False
        except BadRequest as err:
            await self._send(writer, err.status, errors.error_json(str(err)), close=True)
            return False
        except (ValueError, zlib.error) as err:
            await self._send(writer, 400, errors.error_json(f"Malformed request body: {err}"),
                             close=True)
            return False
        status, answer, content_type = await self._route(method, path, body)
        await self._send(writer, status, answer, content_type, close=not request.keep_alive,
                         head=method == "HEAD")
        return request.keep_alive

    async def _route(self, method: str, path: str, body: bytes) -> Tuple[int, bytes, str]:
        monitoring = self.monitoring
        if monitoring.prometheus_enabled and path == monitoring.prometheus_path:
            if method == "GET":
                return 200, self.metrics.exposition(), METRICS_CONTENT_TYPE
            return 400, errors.error_json(f"Malformed request: {method} {path}"), \
                JSON_CONTENT_TYPE
        if _API_PATH.fullmatch(path):
            status, answer = await self.api.handle(method, path, body)
            return status, answer, JSON_CONTENT_TYPE
        return 404, errors.error_json(f"Not found: {method} {path}"), JSON_CONTENT_TYPE

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                    content_type: str = JSON_CONTENT_TYPE, close: bool = False,
                    head: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {_reason(status)}", f"Server: {SERVER_NAME}",
                 f"Date: {self._date()}", f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}"]
        if close:
            lines.append("Connection: close")
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # Head and body leave in one write.
        writer.write(head_bytes if head else head_bytes + body)
        await writer.drain()
