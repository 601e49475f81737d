"""An error as one line of text: for a log field, a recorded reason or a message to the user.

An error's text may be empty, start with a line break or run over many lines (a server's detail,
a traceback); ``str(exc).splitlines()[0]`` fails on the first and says nothing on the second."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The error's first line of text; its type's name when it has none."""
    return first_text_line(str(exc)) or type(exc).__name__


def first_text_line(text: str | None) -> str:
    """The first line of ``text`` that is not blank, stripped; empty when there is none."""
    stripped = (text or "").strip()
    return stripped.splitlines()[0].strip() if stripped else ""
