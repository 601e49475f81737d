"""Line numbers in front of lines, and the gate that hands over whole lines, block by block."""

from __future__ import annotations

import pytest

from watcher.linegate import LineGate
from watcher.linenumbers import number_lines
from watcher.routes import ROUTES, map_header

DAILY = next(route for route in ROUTES if route.table == "daily_activity")
HEADER = (
    b"Id,ActivityDate,TotalSteps,TotalDistance,TrackerDistance,LoggedActivitiesDistance,"
    b"VeryActiveDistance,ModeratelyActiveDistance,LightActiveDistance,SedentaryActiveDistance,"
    b"VeryActiveMinutes,FairlyActiveMinutes,LightlyActiveMinutes,SedentaryMinutes,Calories\r\n"
)


@pytest.mark.parametrize(
    ("lines", "first", "numbered"),
    [
        (b"a\nb\n", 2, b"2,a\n3,b\n"),
        (b"a\r\nb\r\n", 7, b"7,a\r\n8,b\r\n"),
        (b"a", 5, b"5,a"),
        (b"a\nb", 5, b"5,a\n6,b"),
        (b"", 5, b""),
        (b"\n", 9, b"9,\n"),
        (b"x\n", 2147483647, b"2147483647,x\n"),
    ],
)
def test_number_lines(lines: bytes, first: int, numbered: bytes) -> None:
    assert number_lines(lines, first) == numbered


def _gate() -> LineGate:
    cells = [c.decode() for c in HEADER.rstrip(b"\r\n").split(b",")]
    return LineGate(map_header(cells, DAILY).file_columns, HEADER)


def _line(steps: int) -> bytes:
    return b"1503960366,4/12/2016,%d,8.5,8.5,0,1.5,0.5,3.25,0,25,13,328,728,1985\r\n" % steps


def test_gate_hands_over_whole_lines_whatever_the_cuts() -> None:
    body = b"".join(_line(n) for n in range(200))
    for size in (1, 7, 64, 100, 1000, len(body)):
        gate = _gate()
        handed = [gate.admit(body[i : i + size]) for i in range(0, len(body), size)]
        assert all(part is not None and part.count(b"\n") == len(part.splitlines()) for part in handed)
        assert b"".join(handed) == body  # type: ignore[arg-type]
        assert gate.admit_end() == b""


def test_gate_hands_over_a_last_line_without_line_end() -> None:
    gate = _gate()
    last = _line(3).removesuffix(b"\r\n")
    assert gate.admit(_line(1) + _line(2) + last[:20]) == _line(1) + _line(2)
    assert gate.admit(last[20:]) == b""
    assert gate.admit_end() == last


def test_a_vouched_block_builds_no_pattern() -> None:
    """The binary path's reader vouches for plain blocks itself, so compiling the patterns (about
    12 ms, before the first row is sent) waits until a block needs them."""
    gate = _gate()
    body = _line(1) + _line(2)
    assert gate.passes(body, lambda carry, block, end: True)
    assert "_common" not in vars(gate) and "_full" not in vars(gate)
    assert not gate.passes(body + YEAR_201 + b"\r\n", lambda carry, block, end: False)
    assert "_common" in vars(gate)


YEAR_201 = b"1503960366,4/12/201,5,8.5,8.5,0,1.5,0.5,3.25,0,25,13,328,728,1985"
ID_EMPTY = b",4/12/2016,5,8.5,8.5,0,1.5,0.5,3.25,0,25,13,328,728,1985"
QUOTED_LINE_END = b'1503960366,4/12/2016,"5\r\n6",8.5,8.5,0,1.5,0.5,3.25,0,25,13,328,728,1985'
END_MARKER = b"\\."


@pytest.mark.parametrize("bad", [YEAR_201, ID_EMPTY, QUOTED_LINE_END, END_MARKER])
def test_gate_refuses_lines_that_are_not_one_plain_row(bad: bytes) -> None:
    assert _gate().admit(_line(1) + bad + b"\r\n" + _line(2)) is None


@pytest.mark.parametrize("bad", [YEAR_201, ID_EMPTY, END_MARKER])
def test_gate_refuses_such_a_last_line_without_line_end(bad: bytes) -> None:
    gate = _gate()
    assert gate.admit(_line(1) + bad) == _line(1)
    assert gate.admit_end() is None
