"""TFRecord framing: self-checking records that a reader can trust after a crash.

Each record is `length (u64 LE) | masked crc32c(length) (u32) | data | masked crc32c(data)`,
the format of tf.io.TFRecordWriter, TF Serving's warmup files and its request logs, so every
TensorFlow tool reads our files too. The reader stops at the first frame that is incomplete or
fails its checksums: a writer killed mid-record leaves at most such a torn tail, and the
records before it are intact.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import BinaryIO, Iterator, Optional

try:  # C implementation (pinned in requirements.lock); the fallback below is pure Python
    import google_crc32c as _google_crc32c
except ImportError:  # pragma: no cover
    _google_crc32c = None

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
_MAX_RECORD_BYTES = 1 << 31  # a larger length is corruption, not a record


def _crc32c_table() -> list:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = None if _google_crc32c else _crc32c_table()


def crc32c(data: bytes) -> int:
    if _google_crc32c is not None:
        return _google_crc32c.value(bytes(data))
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotated and offset so CRCs of CRCs stay well distributed."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode(data: bytes) -> bytes:
    """One complete frame, ready for a single write."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc32c(length)), data,
                     _FOOTER.pack(masked_crc32c(data))))


@dataclasses.dataclass
class ReadSummary:
    """What a read found: records yielded and the bytes after the last good record."""
    records: int = 0
    trailing_bytes: int = 0
    reason: Optional[str] = None  # why reading stopped early (torn or corrupt frame)


def read_frames(stream: BinaryIO, summary: Optional[ReadSummary] = None) -> Iterator[bytes]:
    """The data of each complete, checksum-valid record, stopping at a torn or corrupt tail."""
    summary = summary if summary is not None else ReadSummary()
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            summary.trailing_bytes += len(header)
            summary.reason = "truncated header"
            return
        length, length_crc = _HEADER.unpack(header)
        if length_crc != masked_crc32c(header[:8]) or length > _MAX_RECORD_BYTES:
            summary.trailing_bytes += len(header) + len(stream.read())
            summary.reason = "corrupt length"
            return
        body = stream.read(length + _FOOTER.size)
        if len(body) < length + _FOOTER.size:
            summary.trailing_bytes += len(header) + len(body)
            summary.reason = "truncated record"
            return
        data = body[:length]
        if _FOOTER.unpack(body[length:])[0] != masked_crc32c(data):
            summary.trailing_bytes += len(header) + len(body) + len(stream.read())
            summary.reason = "corrupt data"
            return
        summary.records += 1
        yield data


def read_file(path: str, summary: Optional[ReadSummary] = None) -> Iterator[bytes]:
    """`read_frames` over one file."""
    with open(path, "rb") as stream:
        yield from read_frames(stream, summary)
