"""Checking one CSV record against a route's column types, in Python.

Used only for files whose fast COPY failed. A compiled pattern accepts ordinary lines at C
speed; a line it refuses is parsed field by field to name the problem, or to pass it on when
it was merely unusual (quoted fields, exponents).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import date, datetime

from watcher.routes import Column, ColumnType

INT_PATTERN = rb" *[-+]?\d{1,18} *"
FLOAT_PATTERN = rb" *[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)? *"
DATE_PATTERN = rb" *\d{1,2}/\d{1,2}/\d{4}(?: \d{1,2}:\d{2}(?::\d{2})?(?: [AaPp][Mm])?)? *"
ISO_DATE_PATTERN = rb" *\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)? *"

_PATTERN_FOR = {
    ColumnType.BIGINT: INT_PATTERN,
    ColumnType.INTEGER: INT_PATTERN,
    ColumnType.DOUBLE: FLOAT_PATTERN,
    ColumnType.DATE: rb"(?:" + DATE_PATTERN + rb"|" + ISO_DATE_PATTERN + rb")",
}
_ANY_FIELD = rb"[^,\"\r\n]*"

INT_RANGE = {ColumnType.BIGINT: 2**63, ColumnType.INTEGER: 2**31}
DATE_FORMATS = (
    "%m/%d/%Y",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
)


def line_pattern(file_columns: tuple[Column | None, ...]) -> re.Pattern[bytes]:
    """A pattern that matches a whole line (without its line end) made of plain valid fields.

    Empty fields are allowed only for optional columns (they load as null).
    """
    parts = []
    for column in file_columns:
        if column is None:
            parts.append(_ANY_FIELD)
            continue
        field = _PATTERN_FOR[column.type]
        parts.append(field if column.required else rb"(?:" + field + rb")?")
    return re.compile(rb",".join(parts) + rb"\r?")


@dataclass(frozen=True)
class RowError:
    reason: str


Value = int | float | date | None


def parse_field(raw: str, column: Column) -> Value | RowError:
    text = raw.strip()
    if text == "":
        if column.required:
            return RowError(f"{column.header} is empty but required")
        return None
    if column.type in INT_RANGE:
        try:
            number = int(text)
        except ValueError:
            return RowError(f"{column.header}: {_show(text)} is not a whole number")
        bound = INT_RANGE[column.type]
        if not -bound <= number < bound:
            return RowError(f"{column.header}: {_show(text)} is out of range")
        return number
    if column.type is ColumnType.DOUBLE:
        try:
            value = float(text)
        except ValueError:
            return RowError(f"{column.header}: {_show(text)} is not a number")
        if math.isnan(value) or math.isinf(value):
            return RowError(f"{column.header}: {_show(text)} is not a finite number")
        return value
    return _parse_date(text, column)


def _parse_date(text: str, column: Column) -> date | RowError:
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return RowError(f"{column.header}: {_show(text)} is not a valid date (expected M/D/YYYY)")


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_record(fields: list[str], file_columns: tuple[Column | None, ...]) -> list[Value] | RowError:
    """Typed values for the route's columns present in the file, or the first problem found."""
    if len(fields) != len(file_columns):
        return RowError(f"expected {len(file_columns)} fields, found {len(fields)}")
    values: list[Value] = []
    for raw, column in zip(fields, file_columns, strict=True):
        if column is None:
            continue
        parsed = parse_field(raw, column)
        if isinstance(parsed, RowError):
            return parsed
        values.append(parsed)
    return values


def split_record(text: str) -> list[str] | RowError:
    """Split one CSV record (possibly spanning lines) into fields."""
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        return RowError(f"malformed CSV: {exc}")
    if len(rows) != 1:
        return RowError("malformed CSV record")
    return rows[0]


def quotes_balanced(raw: bytes) -> bool:
    return raw.count(b'"') % 2 == 0
