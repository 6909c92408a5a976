"""Reads the data frames of an R data file (.rda / .RData / .rds) into pandas, fast.

R writes a data file as its serialization format ("XDR": big-endian, every object a flags word
followed by its payload), usually xz-, gzip- or bzip2-compressed. The `rdata` package reads
every R object type, but it builds a Python object per string, which takes about 50 s for the
541,909-row Online Retail file. A data frame, though, is only a list of plain column vectors,
so this module reads exactly that subset (logical, integer, double, string and factor columns)
with one tight loop per string column and numpy for numeric ones: about 2 s for the same file.

Anything outside that subset (ALTREP vectors, environments, functions, ASCII or native
formats, ...) raises `UnsupportedRData`; `read_data_frames` then falls back to `rdata`, so
the fast path is an optimisation, never a limit on what can be read.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

_INT = struct.Struct(">i")
_FLAGS_AND_LENGTH = struct.Struct(">ii")

# SEXP type codes (R's serialize.c) that a data frame is built from.
_NILVALUE, _SYM, _LIST, _CHAR, _LGL, _INT_SXP, _REAL, _STR, _VEC, _REF = (
    254, 1, 2, 9, 10, 13, 14, 16, 19, 255)
_IS_OBJECT, _HAS_ATTR, _HAS_TAG = 1 << 8, 1 << 9, 1 << 10
_LATIN1, _BYTES = 1 << 2, 1 << 1  # CHARSXP encoding bits (in the "levels" field)
_NA_INT = -(2 ** 31)


class UnsupportedRData(ValueError):
    """The file uses R objects outside the data-frame subset this module reads."""


def read_data_frames(path: str) -> Tuple[Dict[str, pd.DataFrame], str]:
    """Every data frame in an R data file, by name, and which reader read it.

    The fast reader is tried first; on `UnsupportedRData` the `rdata` package reads the file
    (slow but complete). Returns ({name: DataFrame}, "fast" | "rdata").
    """
    try:
        return read_data_frames_fast(path), "fast"
    except UnsupportedRData:
        return _read_with_rdata(path), "rdata"


def read_data_frames_fast(path: str) -> Dict[str, pd.DataFrame]:
    """The data frames of an XDR-format .rda/.rds file; raises UnsupportedRData otherwise."""
    with open(path, "rb") as handle:
        data = _decompress(handle.read())
    if data.startswith(b"RDX2\n") or data.startswith(b"RDX3\n"):
        named = True  # .rda: a pairlist of (name, object)
        data = data[5:]
    else:
        named = False  # .rds: one object
    if not data.startswith(b"X\n"):
        raise UnsupportedRData("only the XDR (binary, big-endian) R format is read quickly")
    reader = _XdrReader(data, 2)
    version = reader.int()
    reader.int()  # R version that wrote the file
    reader.int()  # minimal R version to read it
    if version == 3:
        encoding_name_length = reader.int()
        reader.pos += encoding_name_length  # skip the writer's native encoding name
    elif version != 2:
        raise UnsupportedRData(f"R serialization version {version}")
    root = reader.item()
    objects = _pairlist_to_dict(root) if named else {"data": root}
    return {name: _to_data_frame(obj) for name, obj in objects.items() if _is_data_frame(obj)}


def _decompress(raw: bytes) -> bytes:
    if raw.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(raw)
    if raw.startswith(b"\x1f\x8b"):
        return gzip.decompress(raw)
    if raw.startswith(b"BZh"):
        return bz2.decompress(raw)
    return raw


class _RObject:
    """One parsed R object: its type, payload and attributes (a name -> object dict)."""

    __slots__ = ("sexp_type", "value", "attributes", "is_object")

    def __init__(self, sexp_type: int, value: Any, attributes: Optional[Dict[str, Any]],
                 is_object: bool):
        self.sexp_type = sexp_type
        self.value = value
        self.attributes = attributes or {}
        self.is_object = is_object


class _XdrReader:
    """A cursor over XDR bytes that parses the data-frame subset of R's object types."""

    def __init__(self, data: bytes, pos: int):
        self.data = data
        self.pos = pos
        self.references: List[Any] = []  # symbols, in order: a REFSXP points back into it

    def int(self) -> int:
        (value,) = _INT.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def length(self) -> int:
        length = self.int()
        if length == -1:  # a "long vector": two words, upper then lower
            upper, lower = self.int(), self.int()
            length = (upper << 32) + lower
        return length

    def item(self) -> Any:
        flags = self.int()
        sexp_type = flags & 0xFF
        has_attr = bool(flags & _HAS_ATTR)
        is_object = bool(flags & _IS_OBJECT)
        if sexp_type == _NILVALUE:
            return None
        if sexp_type == _REF:
            index = flags >> 8 or self.int()
            return self.references[index - 1]
        if sexp_type == _SYM:
            name = self.item()
            self.references.append(name)
            return name
        if sexp_type == _LIST:
            return self._pairlist(flags)
        if sexp_type == _CHAR:
            return self._char(flags)
        if sexp_type in (_LGL, _INT_SXP):
            value = self._numbers(">i4")
        elif sexp_type == _REAL:
            value = self._numbers(">f8")
        elif sexp_type == _STR:
            value = self._strings()
        elif sexp_type == _VEC:
            value = [self.item() for _ in range(self.length())]
        else:
            raise UnsupportedRData(f"R object type {sexp_type}")
        attributes = _pairlist_to_dict(self.item()) if has_attr else None
        return _RObject(sexp_type, value, attributes, is_object)

    def _pairlist(self, flags: int) -> List[Tuple[Optional[str], Any]]:
        # A pairlist is a linked list; walk its cells in a loop (not recursion: long lists).
        cells = []
        while True:
            if flags & _HAS_ATTR:
                self.item()  # attributes of a pairlist cell: not used by data frames
            tag = self.item() if flags & _HAS_TAG else None
            cells.append((tag, self.item()))
            flags = self.int()
            if flags & 0xFF == _NILVALUE:
                return cells
            if flags & 0xFF != _LIST:
                raise UnsupportedRData("a dotted pairlist")

    def _char(self, flags: int) -> Optional[str]:
        length = self.int()
        if length == -1:
            return None  # NA_character_
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        return raw.decode(_char_encoding(flags))

    def _numbers(self, dtype: str) -> np.ndarray:
        length = self.length()
        size = np.dtype(dtype).itemsize * length
        values = np.frombuffer(self.data, dtype=dtype, count=length, offset=self.pos)
        self.pos += size
        return values.astype(dtype[1:])  # native byte order

    def _strings(self) -> List[Optional[str]]:
        # The hot loop of a data frame's string columns: one CHARSXP per element. Columns
        # repeat few distinct values (codes, names), so each distinct byte string is decoded
        # once.
        length = self.length()
        data, pos, unpack = self.data, self.pos, _FLAGS_AND_LENGTH.unpack_from
        values: List[Optional[str]] = [None] * length
        decoded: Dict[Tuple[int, bytes], str] = {}
        for index in range(length):
            flags, size = unpack(data, pos)
            pos += 8
            if flags & 0xFF != _CHAR:
                raise UnsupportedRData("a string vector element that is not a CHARSXP")
            if size == -1:
                continue  # NA_character_
            raw = data[pos:pos + size]
            pos += size
            text = decoded.get((flags, raw))
            if text is None:
                text = decoded[(flags, raw)] = raw.decode(_char_encoding(flags))
            values[index] = text
        self.pos = pos
        return values


def _char_encoding(flags: int) -> str:
    levels = flags >> 12
    if levels & _LATIN1:
        return "latin-1"
    if levels & _BYTES:
        raise UnsupportedRData("a string marked as raw bytes")
    return "utf-8"  # UTF-8, ASCII, or native (UTF-8 on every platform that wrote our files)


def _pairlist_to_dict(cells: Any) -> Dict[str, Any]:
    if cells is None:
        return {}
    if not isinstance(cells, list):
        raise UnsupportedRData("expected a pairlist of named objects")
    return {str(tag): value for tag, value in cells}


def _class_of(obj: Any) -> List[str]:
    if not isinstance(obj, _RObject):
        return []
    value = obj.attributes.get("class")
    return list(value.value) if isinstance(value, _RObject) else []


def _is_data_frame(obj: Any) -> bool:
    return "data.frame" in _class_of(obj)


def _to_data_frame(obj: _RObject) -> pd.DataFrame:
    names = obj.attributes["names"].value
    columns = {name: _to_column(column) for name, column in zip(names, obj.value)}
    return pd.DataFrame(columns)


def _to_column(column: Any) -> Any:
    """One R column -> what `rdata` makes of it (factor -> categorical, NA -> missing)."""
    if not isinstance(column, _RObject):
        raise UnsupportedRData("a data frame column that is not a vector")
    values = column.value
    if column.sexp_type == _STR:
        return np.array(values, dtype=object)  # str, None where NA
    if "factor" in _class_of(column):
        levels = column.attributes["levels"].value
        return pd.Categorical.from_codes(np.where(values == _NA_INT, -1, values - 1),
                                         categories=list(levels))
    if column.sexp_type == _INT_SXP:
        return pd.arrays.IntegerArray(values.astype(np.int32), values == _NA_INT)
    if column.sexp_type == _LGL:
        return pd.arrays.BooleanArray(values == 1, values == _NA_INT)
    if column.sexp_type == _REAL:
        return values  # NA_real_ and NaN both read as NaN; dates stay epoch seconds / days
    raise UnsupportedRData(f"a data frame column of R type {column.sexp_type}")


def _read_with_rdata(path: str) -> Dict[str, pd.DataFrame]:
    import rdata

    with warnings.catch_warnings():
        # rdata warns that it has no constructor for POSIXct and keeps the epoch seconds,
        # which is what the fast reader returns too.
        warnings.simplefilter("ignore", UserWarning)
        converted = rdata.read_rda(path) if _is_rda(path) else {"data": rdata.read_rds(path)}
    return {name: frame.reset_index(drop=True) for name, frame in converted.items()
            if isinstance(frame, pd.DataFrame)}


def _is_rda(path: str) -> bool:
    with open(path, "rb") as handle:
        head = _decompress(handle.read())[:5]
    return head in (b"RDX2\n", b"RDX3\n", b"RDA2\n", b"RDA3\n", b"RDB2\n", b"RDB3\n")
