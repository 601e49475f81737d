import errno
import os
from pathlib import Path

from watcher.landing.scanner import (
    FOLDER_DENIED_REASON,
    PATH_TOO_LONG_REASON,
    inspect_entry,
    is_ignored_name,
    problem_of,
    scan,
)


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


def make_deep_folders(root: Path, depth: int, name: str = "d" * 200) -> list[str]:
    """Nested folders whose absolute path ends up over PATH_MAX (made relative to a descriptor,
    since no call can name them whole); the names of each level."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with open(os.open("dailyActivity_deep.csv", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as out:
            out.write("Id\n1\n")
    finally:
        os.close(fd)
    return [name] * depth


def test_a_folder_past_the_path_limit_is_reported_not_skipped(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    make_deep_folders(lake, 25)  # 25 x 201 bytes: past 4096 at the 20th level or so
    (lake / "dailyActivity_ok.csv").write_text("x")
    found = {c.relative: c.problem for c in scan(lake)}
    assert found.pop("dailyActivity_ok.csv") is None
    assert len(found) == 1, found.keys()
    ((relative, problem),) = found.items()
    assert len(str(lake / relative).encode()) >= 4096  # PATH_MAX counts the terminating NUL
    assert problem == PATH_TOO_LONG_REASON


def test_reasons_for_entries_the_system_refuses() -> None:
    assert problem_of(OSError(errno.ENAMETOOLONG, "File name too long")) == PATH_TOO_LONG_REASON
    assert problem_of(PermissionError(errno.EACCES, "Permission denied")) == FOLDER_DENIED_REASON
    assert "Input/output error" in problem_of(OSError(errno.EIO, "Input/output error"))


def test_a_file_whose_own_path_is_too_long_is_reported(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    too_long = lake.joinpath(*(["a" * 200] * 25), "sleep.csv")
    assert inspect_entry(lake, too_long).problem == PATH_TOO_LONG_REASON
