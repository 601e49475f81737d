"""Every option of every command says what it does; the help texts speak to users."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from watcher.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _help_of(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    return out.getvalue()


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert {"watch", "status", "report", "reprocess", "sql", "sample-data"} <= set(commands)
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert missing == []
    listed = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert all((choice.help or "").strip() for choice in listed._choices_actions)


def test_watch_help_lists_the_exit_codes() -> None:
    text = _help_of(["watch", "--help"])
    assert "exit codes:" in text
    for code in ("0", "1", "2", "3"):
        assert f"\n  {code} " in text


def test_top_level_help_says_what_the_program_is_for() -> None:
    text = " ".join(_help_of(["--help"]).split())
    assert "exactly once" in text and "PostgreSQL" in text
    assert "parse arguments" not in text  # not the module's developer docstring
