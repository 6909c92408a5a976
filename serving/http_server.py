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
"""
from __future__ import annotations

import asyncio
import collections
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
from typing import AsyncIterator, Dict, List, Optional, Tuple

from hyperrec.serving import errors
from hyperrec.serving.config import MonitoringOptions
from hyperrec.serving.http_limits import REQUEST_BUDGET_FLAG, HttpLimits
from hyperrec.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hyperrec.serving.metrics import ServingMetrics
from hyperrec.serving.rest_api import RestApi

LOG = logging.getLogger("serving.http")
_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
_HTTP_VERSION = re.compile(r"HTTP/(\d+)\.(\d+)")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
JSON_CONTENT_TYPE = "application/json"
SERVER_NAME = "hyperrec-model-server"
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"})
CHUNKED = "chunked"
DEFAULT_NUM_THREADS = 64
_MAX_LINE_BYTES = 65536  # request line and each header line (http.server's limit)
_MAX_HEADERS = 100  # http.client's limit
_READ_BYTES = 64 * 1024  # body bytes read (and inflated) per step
_MAX_DRAIN_BYTES = 16 * 1024 * 1024
_SHUTDOWN_GRACE_S = 5.0
_LINGER_S = 2.0
_REAP_INTERVAL_S = 0.25  # how often idle connections are swept while the idle cap is pressed


class BadRequest(Exception):
    """Answered with `status` and `{"error": message}`, connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _IdleClose(Exception):
    """The connection stayed idle too long or was closed to make room: close it quietly."""


class _Request:
    """One parsed request head and its body framing."""

    __slots__ = ("method", "path", "headers", "keep_alive", "chunked", "length")

    def __init__(self, method: str, path: str, headers: http.client.HTTPMessage,
                 keep_alive: bool, chunked: bool, length: int):
        self.method = method
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.length = length


async def _read_line(reader: asyncio.StreamReader, what: str, status: int) -> bytes:
    try:
        return await reader.readline()
    except ValueError as err:  # over the reader's limit (_MAX_LINE_BYTES)
        raise BadRequest(status, f"{what} too long") from err


def _check_header_lines(block: List[bytes]) -> None:
    """RFC 9112 5.1/5.2: a header name is a token directly followed by a colon, and folded
    (continuation) lines are refused: proxies read either differently."""
    for line in block:
        if line[:1] in (b" ", b"\t"):
            raise BadRequest(400, "Folded header lines are not accepted")
        name, colon, _ = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BadRequest(400, f"Invalid header line ({line[:80].decode('latin-1')!r})")


def _body_framing(headers: http.client.HTTPMessage, http_11: bool) -> Tuple[bool, int]:
    """(chunked, content length) as RFC 9112 section 6 decides them, or BadRequest."""
    codings_fields = headers.get_all("Transfer-Encoding") or []
    length_fields = headers.get_all("Content-Length") or []
    if codings_fields:
        if length_fields:
            raise BadRequest(400, "Both Content-Length and Transfer-Encoding are set")
        if not http_11:
            raise BadRequest(400, "Transfer-Encoding on an HTTP/1.0 request")
        codings = [c.strip().lower() for field in codings_fields for c in field.split(",")]
        codings = [c for c in codings if c]
        unknown = [c for c in codings if c != CHUNKED]
        if unknown:
            raise BadRequest(501, f"Unsupported Transfer-Encoding: {unknown[0]}")
        if codings != [CHUNKED]:
            raise BadRequest(400, "Transfer-Encoding must end in one chunked coding")
        return True, 0
    values = {v.strip() for field in length_fields for v in field.split(",")}
    if not values:
        return False, 0
    if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
        raise BadRequest(400, f"Invalid Content-Length: {', '.join(length_fields)}")
    return False, int(next(iter(values)))


async def read_request_head(reader: asyncio.StreamReader, first: bytes = b""
                            ) -> Optional[_Request]:
    """The request line and headers (`first`: bytes of the request already read); None when
    the client closed the connection between requests (or sent nothing but a blank line,
    which http.server also answers by closing)."""
    line = first + await _read_line(reader, "Request line", 414)
    if len(line) > _MAX_LINE_BYTES:
        raise BadRequest(414, "Request line too long")
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
    _check_header_lines(block)
    headers = http.client.parse_headers(io.BytesIO(b"".join(block) + b"\r\n"))
    http_11 = (major, minor) >= (1, 1)
    chunked, length = _body_framing(headers, http_11)
    connection = headers.get("Connection", "").lower()
    keep_alive = http_11
    if "close" in connection:
        keep_alive = False
    elif "keep-alive" in connection:
        keep_alive = True
    if target.startswith("//"):  # as http.server: never an absolute URL's authority
        target = "/" + target.lstrip("/")
    return _Request(method, target, headers, keep_alive, chunked, length)


class _Deadline:
    """Cancels the running task when the awaits inside the block outlast `seconds`, and then
    raises asyncio.TimeoutError. (asyncio.timeout is Python 3.11's; asyncio.wait_for starts
    a task per read, a cost every request would pay three times.)"""

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._expired = False
        self._handle: Optional[asyncio.TimerHandle] = None

    def __enter__(self) -> "_Deadline":
        task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(self._seconds, self._expire, task)
        return self

    def _expire(self, task: asyncio.Task) -> None:
        self._expired = True
        task.cancel()

    def __exit__(self, kind, value, traceback) -> bool:
        self._handle.cancel()
        if kind is asyncio.CancelledError and self._expired:
            raise asyncio.TimeoutError() from value
        return False


async def _timed(awaitable, timeout_s: float):
    """`awaitable`'s result, or 408 if it takes longer than `timeout_s`."""
    try:
        with _Deadline(timeout_s):
            return await awaitable
    except asyncio.TimeoutError as err:
        raise BadRequest(408, "Timed out reading the request") from err


def _too_large(size: int, limit: int, flag: str, what: str = "Request body") -> BadRequest:
    return BadRequest(413, f"{what} of {size} bytes exceeds the limit of {limit} bytes ({flag})")


async def _wire_pieces(reader: asyncio.StreamReader, request: _Request,
                       limits: HttpLimits) -> AsyncIterator[bytes]:
    """The body as it arrives, in pieces of at most _READ_BYTES, de-chunked, under the wire
    limit; no read may wait longer than the header timeout."""
    (limit, flag), timeout_s = _body_limit(limits), limits.header_timeout_s
    if not request.chunked:
        if limit and request.length > limit:
            raise _too_large(request.length, limit, flag)
        left = request.length
        while left:
            piece = await _timed(reader.readexactly(min(left, _READ_BYTES)), timeout_s)
            left -= len(piece)
            yield piece
        return
    total = 0
    while True:
        size_line = await _timed(_read_line(reader, "Chunk size line", 400), timeout_s)
        size_text = size_line.split(b";")[0].strip()
        if not size_line.endswith(b"\n") or not _HEX.fullmatch(size_text):
            raise BadRequest(400, f"Invalid chunk size ({size_text[:20].decode('latin-1')!r})")
        size = int(size_text, 16)
        if size == 0:
            for _ in range(_MAX_HEADERS + 1):  # trailers, then the blank line
                if await _timed(_read_line(reader, "Trailer line", 400), timeout_s) in (
                        b"\r\n", b"\n", b""):
                    return
            raise BadRequest(431, "Too many trailer lines")
        total += size
        if limit and total > limit:
            raise _too_large(total, limit, flag)
        while size:
            piece = await _timed(reader.readexactly(min(size, _READ_BYTES)), timeout_s)
            size -= len(piece)
            yield piece
        if await _timed(_read_line(reader, "Chunk end", 400), timeout_s) not in (b"\r\n", b"\n"):
            raise BadRequest(400, "Chunk data not followed by CRLF")


class _Inflater:
    """Gunzips a body piece by piece, refusing to produce more than `limit` bytes."""

    def __init__(self, limit: int, flag: str):
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._limit, self._flag = limit, flag
        self.size = 0

    def feed(self, data: bytes) -> List[bytes]:
        parts = []
        while data and not self._zlib.eof:
            room = self._limit - self.size + 1 if self._limit else 0
            out = self._zlib.decompress(data, room)
            self.size += len(out)
            if self._limit and self.size > self._limit:
                raise BadRequest(413, f"Decompressed request body exceeds the limit of "
                                      f"{self._limit} bytes ({self._flag})")
            parts.append(out)
            data = self._zlib.unconsumed_tail
        return parts


def _tightest(*bounds: Tuple[int, str]) -> Tuple[int, str]:
    """The smallest of (limit, flag) bounds that are set (0: none)."""
    bounds = [bound for bound in bounds if bound[0] > 0]
    return min(bounds) if bounds else (0, "")


_MAX_REQUEST_BYTES_FLAG = "--rest_api_max_request_bytes"


def _body_limit(limits: HttpLimits) -> Tuple[int, str]:
    """The tighter of the limits on a body's bytes as sent, and its flag (a body over the
    request budget costs more than the budget to parse)."""
    return _tightest((limits.max_request_bytes, _MAX_REQUEST_BYTES_FLAG),
                     (limits.request_budget_bytes, REQUEST_BUDGET_FLAG))


def _inflate_limit(limits: HttpLimits) -> Tuple[int, str]:
    """The tightest of the byte limits that apply to an inflated body, and its flag."""
    return _tightest((limits.max_decompressed_bytes, "--rest_api_max_decompressed_bytes"),
                     (limits.max_request_bytes, _MAX_REQUEST_BYTES_FLAG),
                     (limits.request_budget_bytes, REQUEST_BUDGET_FLAG))


async def read_body(reader: asyncio.StreamReader, request: _Request,
                    limits: HttpLimits) -> bytes:
    """The body by Content-Length or chunked framing, gunzipped as it arrives when so encoded
    (TF Serving looks for "gzip" anywhere in Content-Encoding), within `limits`."""
    inflater = None
    if "gzip" in request.headers.get("Content-Encoding", "").lower():
        inflater = _Inflater(*_inflate_limit(limits))
    parts: List[bytes] = []
    async for piece in _wire_pieces(reader, request, limits):
        parts.extend(inflater.feed(piece) if inflater else (piece,))
    return b"".join(parts)


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
        self.idle_closed = 0  # idle connections closed early (room or pressure), for tests
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
        self.idle_closed += 1
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
                            reader: asyncio.StreamReader) -> Optional[_Request]:
        """Waits, idle, up to the idle timeout for a request to begin, then up to the header
        timeout for its head; None when the client closed, _IdleClose when it stayed idle
        too long or was closed to make room."""
        self._become_idle(task)
        try:
            with _Deadline(self.limits.idle_timeout_s):
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
        return await _timed(read_request_head(reader, first), self.limits.header_timeout_s)

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
                      request: _Request) -> bool:
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
