"""The collector's freeze runs after imports only: a garbage object made between two calls with
no module loaded in between is not pinned for ever."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Iterator

import pytest

from watcher import gcfreeze


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_once_per_new_modules(thawed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcfreeze, "_modules_when_frozen", 0)
    gcfreeze.freeze_loaded_modules()
    frozen = gc.get_freeze_count()
    assert frozen > 0

    garbage: list[object] = []
    garbage.append(garbage)  # a cycle: only the collector frees it
    del garbage
    gcfreeze.freeze_loaded_modules()  # no module loaded since: nothing more is frozen
    assert gc.get_freeze_count() == frozen

    name = next(m for m in ("colorsys", "sndhdr", "wave", "chunk", "plistlib") if m not in sys.modules)
    importlib.import_module(name)
    gcfreeze.freeze_loaded_modules()
    assert gc.get_freeze_count() > frozen
