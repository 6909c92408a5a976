"""Reading one HTTP/1.1 request off the REST port: the request line and headers, the body's
framing (RFC 9112: Content-Length or chunked, never both), gzip inflation and the limits and
deadlines on each, every refusal a `BadRequest` with its status."""
from __future__ import annotations

import asyncio
import http
import http.client
import io
import re
import zlib
from typing import AsyncIterator, List, Optional, Tuple

from hyperrec.serving.http_limits import REQUEST_BUDGET_FLAG, HttpLimits

_HTTP_VERSION = re.compile(r"HTTP/(\d+)\.(\d+)")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
CHUNKED = "chunked"
MAX_LINE_BYTES = 65536  # request line and each header line (http.server's limit)
_MAX_HEADERS = 100  # http.client's limit
_READ_BYTES = 64 * 1024  # body bytes read (and inflated) per step


class BadRequest(Exception):
    """Answered with `status` and `{"error": message}`, connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class HttpRequest:
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
    except ValueError as err:  # over the reader's limit (MAX_LINE_BYTES)
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
                            ) -> Optional[HttpRequest]:
    """The request line and headers (`first`: bytes of the request already read); None when
    the client closed the connection between requests (or sent nothing but a blank line,
    which http.server also answers by closing)."""
    line = first + await _read_line(reader, "Request line", 414)
    if len(line) > MAX_LINE_BYTES:
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
    return HttpRequest(method, target, headers, keep_alive, chunked, length)


class Deadline:
    """Cancels the running task when the awaits inside the block outlast `seconds`, and then
    raises asyncio.TimeoutError. (asyncio.timeout is Python 3.11's; asyncio.wait_for starts
    a task per read, a cost every request would pay three times.)"""

    def __init__(self, seconds: float):
        self._seconds = seconds
        self._expired = False
        self._handle: Optional[asyncio.TimerHandle] = None

    def __enter__(self) -> "Deadline":
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


async def timed(awaitable, timeout_s: float):
    """`awaitable`'s result, or 408 if it takes longer than `timeout_s`."""
    try:
        with Deadline(timeout_s):
            return await awaitable
    except asyncio.TimeoutError as err:
        raise BadRequest(408, "Timed out reading the request") from err


def _too_large(size: int, limit: int, flag: str, what: str = "Request body") -> BadRequest:
    return BadRequest(413, f"{what} of {size} bytes exceeds the limit of {limit} bytes ({flag})")


async def _wire_pieces(reader: asyncio.StreamReader, request: HttpRequest,
                       limits: HttpLimits) -> AsyncIterator[bytes]:
    """The body as it arrives, in pieces of at most _READ_BYTES, de-chunked, under the wire
    limit; no read may wait longer than the header timeout."""
    (limit, flag), timeout_s = _body_limit(limits), limits.header_timeout_s
    if not request.chunked:
        if limit and request.length > limit:
            raise _too_large(request.length, limit, flag)
        left = request.length
        while left:
            piece = await timed(reader.readexactly(min(left, _READ_BYTES)), timeout_s)
            left -= len(piece)
            yield piece
        return
    total = 0
    while True:
        size_line = await timed(_read_line(reader, "Chunk size line", 400), timeout_s)
        size_text = size_line.split(b";")[0].strip()
        if not size_line.endswith(b"\n") or not _HEX.fullmatch(size_text):
            raise BadRequest(400, f"Invalid chunk size ({size_text[:20].decode('latin-1')!r})")
        size = int(size_text, 16)
        if size == 0:
            for _ in range(_MAX_HEADERS + 1):  # trailers, then the blank line
                if await timed(_read_line(reader, "Trailer line", 400), timeout_s) in (
                        b"\r\n", b"\n", b""):
                    return
            raise BadRequest(431, "Too many trailer lines")
        total += size
        if limit and total > limit:
            raise _too_large(total, limit, flag)
        while size:
            piece = await timed(reader.readexactly(min(size, _READ_BYTES)), timeout_s)
            size -= len(piece)
            yield piece
        if await timed(_read_line(reader, "Chunk end", 400), timeout_s) not in (b"\r\n", b"\n"):
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


async def read_body(reader: asyncio.StreamReader, request: HttpRequest,
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
