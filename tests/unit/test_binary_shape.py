"""The binary path's pure parts: the shape check past the line gate's pattern, and the encoder
thread's hand-over."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from watcher.binary_copy import _ahead, shape_check

LINE = b"1503960366,4/12/2016,13162,8.5,8.5,0,1.87,0.55,6.06,0,25,13,328,728,1985"


def test_plain_lines_pass_the_shape() -> None:
    crlf, lf = shape_check(b"\r\n"), shape_check(b"\n")
    assert crlf(LINE + b"\r\n" + LINE + b"\r\n")
    assert lf(LINE + b"\n" + b"1503960366,4/12/2016 12:00:00 AM,1,327,346\n")
    assert crlf(b"") and lf(b"")


@pytest.mark.parametrize(
    "odd",
    [
        b'"13162"',  # a quote: CSV quoting rules differ between readers
        b"1e3",  # an exponent: overflow and underflow in a few characters
        b"NaN",
        b"inf",
        b"+13",  # pyarrow refuses it anyway; PostgreSQL reads it: the pattern decides
        b"\t13",
        b"13\r",  # a CR that ends no line
        b"\xc3\xa9",
        b"0." + b"0" * 330 + b"1",  # too small
    ],
)
def test_other_lines_take_the_pattern(odd: bytes) -> None:
    line = LINE.replace(b"13162", odd, 1)
    assert not shape_check(b"\r\n")(line + b"\r\n")
    assert not shape_check(b"\n")(line + b"\n")


def test_a_line_end_of_the_other_kind_takes_the_pattern() -> None:
    assert not shape_check(b"\r\n")(LINE + b"\r\n" + LINE + b"\n")
    assert not shape_check(b"\n")(LINE + b"\r\n")


def test_ahead_hands_over_in_order_and_raises_the_producers_error() -> None:
    def items() -> Iterator[int]:
        yield from range(10)
        raise ValueError("broken")

    got = []
    with pytest.raises(ValueError, match="broken"):
        for item in _ahead(items(), 2):
            got.append(item)
    assert got == list(range(10))


def test_ahead_stops_the_producer_when_the_consumer_stops() -> None:
    produced = []

    def items() -> Iterator[int]:
        for i in range(1_000_000):
            produced.append(i)
            yield i

    before = threading.active_count()
    for item in _ahead(items(), 2):
        if item == 3:
            break
    assert len(produced) < 10
    assert threading.active_count() == before
