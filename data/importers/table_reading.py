"""Reading an import's files (CSV, TSV, Parquet, JSON lines; compressed or not) and parsing
their values: ids and text, timestamps in any unit or zone, the engaged-if condition; every
refusal a `TableImportError` that says what is needed."""
from __future__ import annotations

import difflib
import hashlib
import math
import operator
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd


FORMATS = ("csv", "tsv", "parquet", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet",
               ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_COMPRESSION = (".gz", ".bz2", ".zip", ".xz", ".zst")
TIME_UNITS = ("auto", "s", "ms", "us", "iso")
_UNIT_DIVISOR = {"s": 1, "ms": 1_000, "us": 1_000_000}
MAX_EXAMPLES = 5  # examples of each problem in the report and the messages
_LATEST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z: later is no timestamp
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?"
                  r"(Z|[+-]\d{2}(:?\d{2})?)?", re.IGNORECASE)
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_CONDITION = re.compile(r"\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<)\s*"
                        r"([+-]?(\d+(\.\d*)?|\.\d+))\s*")
_OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
              ">": operator.gt, "<": operator.lt}


class TableImportError(ValueError):
    """Bad input the import refuses: the message names what is wrong and what is needed."""


def table_format(path: str, given: Optional[str], flag: str) -> str:
    """The file's format: `given`, else from its extension (a .gz etc. suffix is skipped)."""
    if given:
        if given not in FORMATS:
            raise TableImportError(f"{flag} {given!r} is not one of {FORMATS}")
        return given
    name = path.lower()
    for suffix in _COMPRESSION:
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    extension = os.path.splitext(name)[1]
    if extension not in _EXTENSIONS:
        raise TableImportError(f"{path}: cannot tell the format from the extension "
                           f"{extension or '(none)'!r}; name it with {flag} "
                           f"(one of {FORMATS})")
    return _EXTENSIONS[extension]


def read_table(path: str, fmt: str) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """The file as a DataFrame, and per column how many text cells were not valid UTF-8
    (decoded with U+FFFD replacement characters). CSV/TSV cells are all text."""
    if os.path.getsize(path) == 0:
        raise TableImportError(f"{path} is empty: hyperrec needs a header row and the "
                           "interactions of at least two users")
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        not_utf8 = {}
        for column in frame.columns:
            if frame[column].dtype == object and frame[column].map(
                    lambda value: isinstance(value, bytes)).any():
                frame[column], not_utf8[column] = _decode_bytes(frame[column])
        return frame, {column: count for column, count in not_utf8.items() if count}

    def read(errors: str) -> pd.DataFrame:
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False, convert_dates=False,
                                encoding="utf-8", encoding_errors=errors)
        return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                           keep_default_na=False, encoding="utf-8", encoding_errors=errors)

    try:
        try:
            return read("strict"), {}
        except UnicodeDecodeError:
            frame = read("replace")
    except pd.errors.EmptyDataError as err:
        raise TableImportError(f"{path} has no header row: hyperrec needs a header row and the "
                           "interactions of at least two users") from err
    except ValueError as err:
        raise TableImportError(f"{path} is not readable as {fmt}: {err}") from err
    not_utf8 = {str(column): int(frame[column].map(
        lambda value: isinstance(value, str) and "\ufffd" in value).sum())
        for column in frame.columns}
    return frame, {column: count for column, count in not_utf8.items() if count}


def _decode_bytes(values: pd.Series) -> Tuple[pd.Series, int]:
    bad = 0

    def decode(value):
        nonlocal bad
        if not isinstance(value, bytes):
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            return value.decode("utf-8", errors="replace")
    decoded = values.map(decode)
    return decoded, bad


def file_source(path: str, fmt: str, frame: pd.DataFrame) -> Dict[str, Any]:
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return {"file": os.path.basename(path), "format": fmt, "sha256": digest,
            "rows": len(frame), "columns": [str(column) for column in frame.columns]}


def require_columns(frame: pd.DataFrame, wanted: Dict[str, str], file_name: str) -> None:
    """Every named column must be in the file: the error names it, lists the columns found and
    suggests the closest one."""
    found = [str(column) for column in frame.columns]
    for flag, column in wanted.items():
        if column not in found:
            close = difflib.get_close_matches(column, found, n=1, cutoff=0.5) or [
                name for name in found if name.lower() == column.lower()]
            hint = f"; did you mean {close[0]!r} ({flag} {close[0]})?" if close else ""
            raise TableImportError(f"{flag}: column {column!r} is not in {file_name}; columns "
                               f"found: {found}{hint}")


# ---- values -------------------------------------------------------------------------------
def id_texts(values: pd.Series) -> pd.Series:
    """Ids as text: integral numbers without ".0", text stripped, missing -> ""."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        integral = numbers.notna() & (numbers == np.floor(numbers.fillna(0)))
        text = numbers.map(lambda number: "" if pd.isna(number) else repr(float(number)))
        text[integral] = numbers[integral].map(lambda number: str(int(number)))
        return text
    return texts(values)


def texts(values: pd.Series) -> pd.Series:
    """Values as stripped text; missing (None, NaN) -> ""."""
    return values.map(lambda value: "" if value is None or (
        isinstance(value, float) and math.isnan(value)) else str(value).strip())


def parse_times(values: pd.Series, unit: str, timezone: str, column: str
                ) -> Tuple[pd.Series, str]:
    """Epoch seconds (float, NaN where a value is no timestamp) and the unit used.

    Numbers are epoch seconds, milliseconds or microseconds (`auto`: by the magnitude of the
    median, >= 1e14 us, >= 1e11 ms, else s); text is ISO-8601: with a zone converted to UTC,
    without one read in `timezone`, a date alone is midnight; fractions of a second are cut.
    """
    if unit not in TIME_UNITS:
        raise TableImportError(f"--timestamp-unit {unit!r} is not one of {TIME_UNITS}")
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values if values.dt.tz is not None else _localize(values, timezone)
        return _seconds(stamps.dt.tz_convert("UTC")), "datetime"
    if unit == "auto":
        unit = _guess_unit(values)
    if unit == "iso":
        return _iso_seconds(texts(values), timezone), unit
    numbers = pd.to_numeric(values if pd.api.types.is_numeric_dtype(values)
                            else texts(values).where(texts(values) != "", None),
                            errors="coerce").astype(float)
    seconds = np.floor(numbers / _UNIT_DIVISOR[unit])
    return seconds.where(seconds.abs() <= _LATEST_SECOND), unit


def _guess_unit(values: pd.Series) -> str:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce").dropna()
    else:
        text = texts(values)
        text = text[text != ""]
        numeric = text.map(lambda value: bool(NUMBER.fullmatch(value)))
        if numeric.mean() < 0.5 if len(text) else True:
            return "iso"
        numbers = pd.to_numeric(text[numeric], errors="coerce").dropna()
    magnitude = float(numbers.abs().median()) if len(numbers) else 0.0
    return "us" if magnitude >= 1e14 else "ms" if magnitude >= 1e11 else "s"


def _localize(stamps: pd.Series, timezone: str) -> pd.Series:
    try:
        return stamps.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    except Exception as err:  # pytz/zoneinfo: an unknown zone name
        raise TableImportError(f"--timezone {timezone!r} is not a time zone name (e.g. UTC, "
                           "Europe/Berlin, America/New_York)") from err


def _seconds(stamps: pd.Series) -> pd.Series:
    """Zone-aware datetimes -> epoch seconds (float, NaN for NaT), fractions cut."""
    naive = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    nanos = naive.to_numpy(dtype="datetime64[ns]").astype("int64").astype(float)
    return pd.Series(np.floor(nanos / 1e9), index=stamps.index).where(stamps.notna())


def _iso_seconds(text: pd.Series, timezone: str) -> pd.Series:
    distinct = pd.Series(text.unique())
    matches = distinct.map(_ISO.fullmatch)
    iso = matches.map(bool)
    zoned = matches.map(lambda match: bool(match and match.group(4)))
    seconds = pd.Series(np.nan, index=distinct.index)
    if zoned.any():
        parsed = pd.to_datetime(distinct[zoned].str.replace(" ", "T", n=1), errors="coerce",
                                utc=True)
        seconds[zoned] = _seconds(parsed)
    naive = iso & ~zoned
    if naive.any():
        parsed = pd.to_datetime(distinct[naive].str.replace(" ", "T", n=1), errors="coerce")
        seconds[naive] = _seconds(_localize(parsed, timezone))
    lookup = dict(zip(distinct, seconds))
    return text.map(lookup).astype(float)


def engaged_condition(text: str, rating_column: str):
    """"rating>=4" (or the rating column's own name) -> a function of the ratings."""
    match = _CONDITION.fullmatch(text or "")
    if not match:
        raise TableImportError(f"--engaged-if {text!r} is not a comparison of the rating with a "
                           "number, e.g. --engaged-if 'rating>=4'")
    name, comparison, threshold = match.group(1), match.group(2), float(match.group(3))
    if name not in ("rating", rating_column):
        raise TableImportError(f"--engaged-if compares {name!r}: write 'rating' or the rating "
                           f"column {rating_column!r}, e.g. --engaged-if 'rating>=4'")
    return lambda ratings: _OPERATORS[comparison](ratings, threshold)


def examples_of(values: pd.Series) -> List[str]:
    return [str(value) for value in pd.unique(values)[:MAX_EXAMPLES]]
