"""The collector's freeze runs after imports only: a garbage object made between two calls with
no module loaded in between is not pinned for ever."""

from __future__ import annotations

import gc
import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher import gcfreeze


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_once_per_new_modules(thawed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcfreeze, "_modules_when_frozen", 0)
    gcfreeze.freeze_loaded_modules()
    frozen = gc.get_freeze_count()
    assert frozen > 0

    garbage: list[object] = []
    garbage.append(garbage)  # a cycle: only the collector frees it
    del garbage
    gcfreeze.freeze_loaded_modules()  # no module loaded since: nothing more is frozen
    assert gc.get_freeze_count() == frozen

    name = f"freshly_loaded_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("VALUES = [1, 2, 3]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, name, importlib.import_module(name))  # gone again after
    gcfreeze.freeze_loaded_modules()
    assert gc.get_freeze_count() > frozen
