"""The REST port: HTTP/1.1 on one asyncio event loop, carrying the REST API and the metrics.

Only transport lives here: reading the request (Content-Length or chunked body, gzip
Content-Encoding as TF Serving accepts it), routing `/v1/...` to serving/rest_api.py and the
configured Prometheus path to the metrics, and writing JSON. Every refusal is a JSON
`{"error": ...}` body, like TF Serving's, and closes the connection.

Framing follows RFC 9112, because a front proxy and this server must agree where each request
ends (otherwise bytes one of them takes as body the other runs as a request):
- Content-Length and Transfer-Encoding together: 400;
- a transfer coding other than exactly `chunked` (compared as a token, case-insensitively):
  501; `chunked` twice or not last: 400; Transfer-Encoding on HTTP/1.0: 400;
- Content-Length values that are not all the same decimal number: 400;
- header names that are not tokens or are followed by whitespace, folded header lines, chunk
  sizes that are not hex digits, chunk data not ended by CRLF: 400.

Each request costs bounded time and memory:
- a body over `max_request_bytes` (0: none, like the stock server) is 413;
- a gzip body is inflated as it arrives, at most `max_decompressed_bytes` of output (TF
  Serving's 10 MiB, ZLib::kMaxUncompressedBytes, by default), else 413: a 1 MB body cannot
  become a 1 GiB buffer;
- the request line and headers must arrive within `header_timeout_s` of the request's first
  byte, and a body may not pause longer than that (408); a keep-alive connection without a
  request for `idle_timeout_s` is closed;
- a request body priced over the per-request budget (serving/request_budget.py) is 413
  before it is parsed, and one whose bytes alone are over it before it is read.

Idle connections cannot lock clients out. A connection is idle while it waits for a request
(a new one before its first byte, a keep-alive one between requests), active from a
request's first byte until its answer is written. Idle ones are capped apart from active
ones: beyond `max_idle_connections` the oldest idle one is closed, and above half of that
cap the idle timeout shrinks linearly, down to `pressure_idle_timeout_s` at the cap. A new
connection beyond `max_connections` closes the oldest idle one to make room; only when
every connection is active is it answered 503 and closed. Closing an idle connection sends
nothing (as an idle timeout does), and it is not lingered on: it has sent nothing unread.

Why one loop and not a thread per connection: every REST request costs about a millisecond
of GIL-bound Python (JSON in and out). Spread over a thread per connection, the threads'
fight for the GIL more than doubled that cost at 8 clients and made throughput fall as
clients were added. Here the loop thread does the work of small requests, and the model
calls, which block on TensorFlow or on their batch, run on the loop's executor: `num_threads`
threads, which is also the most REST requests one batch can gather. Large bodies are parsed
on the executor too (serving/rest_api.py), so one of them cannot stall the loop.

Reading a request (head, framing, body, limits) lives in http_request_reader.py; this module
owns the connections, their idle and active caps, routing and writing the answers.
"""
from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import http.client
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
from hyperrec.serving.http_limits import HttpLimits
from hyperrec.serving.http_request_reader import (
    MAX_LINE_BYTES, BadRequest, Deadline, HttpRequest, read_body, read_request_head, timed)
from hyperrec.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hyperrec.serving.metrics import ServingMetrics
from hyperrec.serving.rest_api import RestApi

LOG = logging.getLogger("serving.http")
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
JSON_CONTENT_TYPE = "application/json"
SERVER_NAME = "hyperrec-model-server"
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"})
DEFAULT_NUM_THREADS = 64
_MAX_DRAIN_BYTES = 16 * 1024 * 1024
_SHUTDOWN_GRACE_S = 5.0
_LINGER_S = 2.0
_REAP_INTERVAL_S = 0.25  # how often idle connections are swept while the idle cap is pressed


class _IdleClose(Exception):
    """The connection stayed idle too long or was closed to make room: close it quietly."""


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
                 monitoring: MonitoringOptions, limits: HttpLimits = HttpLimits(),
                 num_threads: int = DEFAULT_NUM_THREADS):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Bound here, not in the loop, so a taken port fails the constructor (and the
        # server's start) in the caller's thread, where it can be reported.
        self._socket = socket.create_server((host, port), family=family, backlog=128)
        self.host = host
        self.port = self._socket.getsockname()[1]
        self.api = api
        self.metrics = metrics
        self.monitoring = monitoring
        self.limits = limits
        self._loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(max(1, num_threads), thread_name_prefix="rest-model")
        self._loop.set_default_executor(self._executor)
        self._server: Optional[asyncio.AbstractServer] = None
        self._connections: Dict[asyncio.Task, bool] = {}  # task -> busy with a request
        # Idle connections' tasks -> loop time they became idle, oldest first.
        self._idle: "collections.OrderedDict[asyncio.Task, float]" = collections.OrderedDict()
        self._evicted: set = set()  # idle tasks cancelled to make room or for pressure
        self._reaping: Optional[asyncio.TimerHandle] = None
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
            self._serve_connection, sock=self._socket, limit=MAX_LINE_BYTES))
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
        if self._reaping is not None:
            self._reaping.cancel()
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
        if len(self._connections) - len(self._evicted) >= self.limits.max_connections \
                and not self._close_oldest_idle():
            await self._refuse_connection(reader, writer)
            return
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
        except _IdleClose:
            pass  # nothing sent, nothing unread: closed at once
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
                self._idle.pop(task, None)
                self._evicted.discard(task)
                writer.close()

    async def _refuse_connection(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        """503 and close, before reading anything: the connection limit is reached."""
        message = (f"Too many open connections (limit {self.limits.max_connections}, "
                   "--rest_api_max_connections, none of them idle); retry later")
        try:
            await self._send(writer, 503, errors.error_json(message), close=True)
            await self._lingering_close(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
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

    # -- idle connections -----------------------------------------------------------------------

    def _idle_timeout_now(self) -> float:
        """The idle timeout at the present number of idle connections: the configured one up
        to half the idle cap, then falling linearly to the pressure timeout at the cap."""
        full, cap = self.limits.idle_timeout_s, self.limits.max_idle_connections
        floor = min(self.limits.pressure_idle_timeout_s, full)
        pressure = len(self._idle) / cap if cap > 0 else 0.0
        if pressure <= 0.5:
            return full
        return full - (full - floor) * min(1.0, (pressure - 0.5) / 0.5)

    def _become_idle(self, task: asyncio.Task) -> None:
        self._idle[task] = self._loop.time()
        cap = self.limits.max_idle_connections
        while cap > 0 and len(self._idle) > cap and self._close_oldest_idle():
            pass
        if cap > 0 and len(self._idle) > cap // 2 and self._reaping is None:
            self._reaping = self._loop.call_later(_REAP_INTERVAL_S, self._reap_idle)

    def _close_oldest_idle(self) -> bool:
        """Closes the connection idle the longest (cancelling its wait); False if none is."""
        if not self._idle:
            return False
        task, _ = self._idle.popitem(last=False)
        self._evicted.add(task)
        task.cancel()
        return True

    def _reap_idle(self) -> None:
        """Closes idle connections older than the idle timeout the present pressure allows,
        oldest first; runs again while more than half the idle cap is idle."""
        self._reaping = None
        cutoff = self._loop.time() - self._idle_timeout_now()
        while self._idle and next(iter(self._idle.values())) < cutoff:
            self._close_oldest_idle()
        if len(self._idle) > self.limits.max_idle_connections // 2 and not self._closing:
            self._reaping = self._loop.call_later(_REAP_INTERVAL_S, self._reap_idle)

    async def _next_request(self, task: asyncio.Task,
                            reader: asyncio.StreamReader) -> Optional[HttpRequest]:
        """Waits, idle, up to the idle timeout for a request to begin, then up to the header
        timeout for its head; None when the client closed, _IdleClose when it stayed idle
        too long or was closed to make room."""
        self._become_idle(task)
        try:
            with Deadline(self.limits.idle_timeout_s):
                first = await reader.read(1)
        except asyncio.TimeoutError:
            raise _IdleClose() from None  # closed without an answer, as is usual
        except asyncio.CancelledError:
            if task in self._evicted:
                raise _IdleClose() from None
            raise
        finally:
            self._idle.pop(task, None)
        if not first:
            return None
        return await timed(read_request_head(reader, first), self.limits.header_timeout_s)

    async def _serve_request(self, task: asyncio.Task, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> bool:
        """Reads, answers and writes one request; False when the connection should close."""
        try:
            request = await self._next_request(task, reader)
            if request is None:
                return False
            self._connections[task] = True
            try:
                return await self._answer(reader, writer, request)
            finally:
                self._connections[task] = False
        except BadRequest as err:
            await self._send(writer, err.status, errors.error_json(str(err)), close=True)
            return False

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      request: HttpRequest) -> bool:
        method, path = request.method, request.path
        if method not in METHODS:
            raise BadRequest(501, f"Unsupported method ({method!r})")
        if request.headers.get("Expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await read_body(reader, request, self.limits)
        except zlib.error as err:
            raise BadRequest(400, f"Malformed request body: {err}") from err
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
