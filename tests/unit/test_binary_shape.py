"""The binary path's pure parts: the shortcut past the line gate's pattern, and the encoder
thread's hand-over."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.arrow_rows import line_ends
from watcher.binary_copy import _ahead, plain_enough

LINE = b"1503960366,4/12/2016,13162,8.5,8.5,0,1.87,0.55,6.06,0,25,13,328,728,1985"


def _plain(lines: bytes) -> bool:
    return plain_enough(b"", lines, len(lines))


@given(
    st.binary(max_size=2000)
    | st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"1,", b"\x0a\x0a"])).map(b"".join)
)
def test_line_ends_are_counted_as_bytes_count_them(block: bytes) -> None:
    assert line_ends(block) == block.count(b"\n")


def test_plain_lines_pass_the_shortcut() -> None:
    assert _plain(LINE + b"\r\n" + LINE + b"\r\n")
    assert _plain(LINE + b"\n" + b"1503960366,4/12/2016 12:00:00 AM,1,327,346\n")
    assert _plain(b"")


@pytest.mark.parametrize(
    "odd",
    [
        b'"13162"',  # a quote: CSV quoting rules differ between readers
        b"1e3",  # an exponent: overflow and underflow in a few characters
        b"1E3",
        b"0." + b"0" * 330 + b"1",  # too small
    ],
)
def test_lines_the_reader_could_misread_take_the_pattern(odd: bytes) -> None:
    line = LINE.replace(b"13162", odd, 1)
    assert not _plain(line + b"\r\n")
    assert not _plain(line + b"\n")


@pytest.mark.parametrize(
    "odd", [b"NaN", b"inf", b"+13", b"\t13", b"13\r", b"\xc3\xa9", b"0." + b"0" * 290 + b"1"]
)
def test_lines_the_reader_refuses_or_reads_alike_skip_the_pattern(odd: bytes) -> None:
    """pyarrow refuses these, or reads them as PostgreSQL does, or the checks after it catch them
    (``test_binary_copy``'s differential tests load each on both paths)."""
    line = LINE.replace(b"13162", odd, 1)
    assert _plain(line + b"\r\n")
    assert _plain(line + b"\n")


@pytest.mark.parametrize("split", [1, 150, 299])
def test_the_carried_line_and_the_block_are_one_text(split: int) -> None:
    """A pattern across the seam of the carried line and the block is found; one after the
    lines the block completes is not theirs (it is carried to the next block)."""
    line = LINE.replace(b"13162", b"0." + b"0" * 300, 1) + b"\r\n"
    at = line.index(b"0." + b"0" * 300) + 2 + split
    carry, block = line[:at], line[at:]
    assert not plain_enough(carry, block, len(block))
    assert not plain_enough(b"", b'13"\n', 4)
    assert plain_enough(b"", LINE + b"\n" + b'13"', len(LINE) + 1)


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
