"""An error as one line: empty texts, leading line breaks and long server messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher import summary
from watcher.errortext import first_line, first_text_line
from watcher.pass_result import PassResult
from watcher.transform import BuildResult, NodeResult


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (OSError(), "OSError"),
        (ValueError("   \n  "), "ValueError"),
        (RuntimeError("\nserver closed the connection unexpectedly\n\tThis probably means..."),
         "server closed the connection unexpectedly"),
        (KeyError("a"), "'a'"),
        (ConnectionError("refused"), "refused"),
    ],
)  # fmt: skip
def test_an_error_is_its_first_line_with_text_or_its_type(error: BaseException, line: str) -> None:
    assert first_line(error) == line


@given(st.text())
def test_any_text_gives_one_line_of_it(text: str) -> None:
    line = first_text_line(text)
    assert line == line.strip()
    assert not any(ch in line for ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
    assert line in text
    assert bool(line) == bool(text.strip())
    assert first_line(Exception(text)) == (line or "Exception")


def test_a_dbt_failure_without_a_message_is_summarized() -> None:
    """dbt reports some failures with an empty message: the pass's summary still prints."""
    failed = NodeResult("model.wearable.user_baseline", "error", "", 0.1)
    build = BuildResult("error", 1.0, ("source:raw.daily_activity+",), nodes=[failed])
    text = summary.pass_as_text(PassResult("once", run_id=7, build=build))
    assert "  error     model.wearable.user_baseline: " in text
