import os
from pathlib import Path

from watcher.scanner import is_ignored_name, scan


def test_temporary_and_hidden_names() -> None:
    for name in (".x.csv", "a.part", "a.tmp", "a.csv.swp", "~lock.csv", "a.csv~"):
        assert is_ignored_name(name), name
    assert not is_ignored_name("dailyActivity_merged.csv")


def test_scan_is_recursive_sorted_and_reports_odd_entries(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "b" / "c").mkdir(parents=True)
    (lake / "b" / "c" / "sleep.csv").write_text("x")
    (lake / "a.csv").write_text("x")
    (lake / ".hidden").mkdir()
    (lake / ".hidden" / "sleep.csv").write_text("x")
    (lake / "folder.csv").mkdir()
    outside = tmp_path / "secret.csv"
    outside.write_text("x")
    os.symlink(outside, lake / "link_daily_activity.csv")
    os.symlink(lake / "a.csv", lake / "inside_link.csv")
    found = {c.relative: c.problem for c in scan(lake)}
    assert found["a.csv"] is None
    assert found["b/c/sleep.csv"] is None
    assert found["inside_link.csv"] is None
    assert "outside the data lake" in (found["link_daily_activity.csv"] or "")
    assert "directory" in (found["folder.csv"] or "")
    assert not any(k.startswith(".hidden") for k in found)
