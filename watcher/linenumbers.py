"""Line numbers written into the COPY stream by the client, as a first field in front of each line.

A column default such as ``nextval()`` costs the server about a fifth of a plain COPY's time; a
number it parses as one more field costs it next to nothing. Here the numbers are written by C
code (``bytes.split``, ``map`` over ``bytes.__mod__``, ``bytes.join``), no Python statement runs
per line: about 0.25 s of client time per million lines, spent while the server is busy with the
previous block (docs/design-decisions.md).
"""

from __future__ import annotations


def number_lines(lines: bytes, first: int, prefix: bytes = b"") -> bytes:
    """``b"a\\nb\\n"`` numbered from 2 is ``b"2,a\\n3,b\\n"``; a last line without a line end
    stays without one. ``lines`` holds whole lines: a line cut in two would get two numbers.
    ``prefix`` goes in front of each number (``b"17,"``: a load id, for a COPY of many files)."""
    parts = lines.split(b"\n")
    ends_with_newline = not parts[-1]
    if ends_with_newline:
        parts.pop()
    if not parts:
        return b""
    pieces = [b""] * (2 * len(parts))
    head = b"\n" + prefix.replace(b"%", b"%%") + b"%d,"
    pieces[0::2] = map(head.__mod__, range(first, first + len(parts)))
    pieces[1::2] = parts
    pieces[0] = pieces[0][1:]  # the first line has no line end before it
    if ends_with_newline:
        pieces.append(b"\n")
    return b"".join(pieces)
