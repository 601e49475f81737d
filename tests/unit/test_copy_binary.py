"""The numpy encoder of COPY's binary rows, against the format as PostgreSQL documents it
(built here value by value with ``struct``); that the server reads it back alike is
``tests/integration/test_binary_copy.py``'s."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.copy_binary import HEADER, TRAILER, Field, RowEncoder

FIELDS = [Field("line", ">i4"), Field("id", ">i8"), Field("distance", ">f8"), Field("day", ">i4")]
FORMATS = {">i4": ">i", ">i8": ">q", ">f8": ">d"}


def by_hand(rows: list[tuple[int | float | None, ...]]) -> bytes:
    """Each row: its field count, then per field the length and the value, or -1 for NULL."""
    out = b""
    for row in rows:
        out += struct.pack(">h", len(row))
        for field, value in zip(FIELDS, row, strict=True):
            if value is None:
                out += struct.pack(">i", -1)
            else:
                packed = struct.pack(FORMATS[field.dtype], value)
                out += struct.pack(">i", len(packed)) + packed
    return out


def test_the_header_and_trailer_are_the_documented_ones() -> None:
    assert HEADER == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    assert TRAILER == b"\xff\xff"


values = st.tuples(
    st.integers(-(2**31), 2**31 - 1),
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    st.one_of(st.none(), st.floats(allow_nan=False)),
    st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
)


@given(rows=st.lists(values, min_size=1, max_size=40))
def test_rows_with_and_without_nulls_match_the_format(rows: list[tuple[int | float | None, ...]]) -> None:
    columns = list(zip(*rows, strict=True))
    dtypes = [np.int32, np.int64, np.float64, np.int32]
    arrays = [
        np.array([0 if v is None else v for v in c], dtype=t) for c, t in zip(columns, dtypes, strict=True)
    ]
    nulls = [None, *(np.array([v is None for v in c]) if None in c else None for c in columns[1:])]
    assert bytes(RowEncoder(FIELDS).encode(arrays, nulls)) == by_hand(rows)


@pytest.mark.parametrize("rows", [0, 1, 3])
def test_a_batch_is_its_rows_back_to_back(rows: int) -> None:
    arrays = [np.arange(rows, dtype=t) for t in (np.int32, np.int64, np.float64, np.int32)]
    encoded = bytes(RowEncoder(FIELDS).encode(arrays, [None] * 4))
    assert encoded == by_hand([(i, i, float(i), i) for i in range(rows)])
