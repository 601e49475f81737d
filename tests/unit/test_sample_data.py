"""The sample-data generator writes files in the real Fitbit export format, deterministically."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path

import pytest

from watcher import sample_data
from watcher.sample_data import ACTIVITY_HEADER, SLEEP_HEADER, generate, plan_users

REPO_ROOT = Path(__file__).resolve().parents[2]
DATE_RE = re.compile(r"^(1[0-2]|[1-9])/(3[01]|[12][0-9]|[1-9])/\d{4}$")
SLEEP_DAY_RE = re.compile(r"^(1[0-2]|[1-9])/(3[01]|[12][0-9]|[1-9])/\d{4} 12:00:00 AM$")
NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def lines_of(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.endswith(b"\r\n")
    return data.decode("ascii").split("\r\n")[:-1]


def rows_of(path: Path) -> list[list[str]]:
    return [line.split(",") for line in lines_of(path)[1:]]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("sample")
    return out, generate(out, users=12, days=60, seed=7)


def test_same_seed_gives_same_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", users=5, days=20, seed=3)
    generate(tmp_path / "b", users=5, days=20, seed=3)
    generate(tmp_path / "c", users=5, days=20, seed=4)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert tree_bytes(tmp_path / "a") != tree_bytes(tmp_path / "c")


def test_committed_sample_data_is_what_the_generator_writes(
    generated: tuple[Path, list[Path]],
) -> None:
    committed = REPO_ROOT / "sample_data"
    assert tree_bytes(committed) == tree_bytes(generated[0]), (
        "sample_data/ is stale: regenerate it with `wearable-pipeline sample-data`"
    )


def test_files_are_split_into_export_periods(generated: tuple[Path, list[Path]]) -> None:
    out, written = generated
    names = sorted(p.relative_to(out).as_posix() for p in written)
    assert names == [
        "2016-03-12_2016-04-10/dailyActivity_merged.csv",
        "2016-03-12_2016-04-10/sleepDay_merged.csv",
        "2016-04-11_2016-05-10/dailyActivity_merged.csv",
        "2016-04-11_2016-05-10/sleepDay_merged.csv",
    ]
    assert sorted(written) == sorted(p for p in out.rglob("*") if p.is_file())


def test_every_day_falls_in_its_folder_period(generated: tuple[Path, list[Path]]) -> None:
    for path in generated[1]:
        first, last = (date.fromisoformat(s) for s in path.parent.name.split("_"))
        for row in rows_of(path):
            day = datetime.strptime(row[1].split(" ")[0], "%m/%d/%Y").date()
            assert first <= day <= last


def test_headers_are_exact_and_files_have_crlf_without_bom_or_quotes(
    generated: tuple[Path, list[Path]],
) -> None:
    for path in generated[1]:
        data = path.read_bytes()
        assert not data.startswith(b"\xef\xbb\xbf")
        assert b'"' not in data
        assert data.count(b"\n") == data.count(b"\r\n")
        expected = ACTIVITY_HEADER if path.name == "dailyActivity_merged.csv" else SLEEP_HEADER
        assert lines_of(path)[0] == expected
    assert ACTIVITY_HEADER == (
        "Id,ActivityDate,TotalSteps,TotalDistance,TrackerDistance,LoggedActivitiesDistance,"
        "VeryActiveDistance,ModeratelyActiveDistance,LightActiveDistance,SedentaryActiveDistance,"
        "VeryActiveMinutes,FairlyActiveMinutes,LightlyActiveMinutes,SedentaryMinutes,Calories"
    )
    assert SLEEP_HEADER == "Id,SleepDay,TotalSleepRecords,TotalMinutesAsleep,TotalTimeInBed"


def test_fields_have_the_export_formats(generated: tuple[Path, list[Path]]) -> None:
    for path in generated[1]:
        is_activity = path.name == "dailyActivity_merged.csv"
        for row in rows_of(path):
            assert len(row) == (15 if is_activity else 5)
            assert re.fullmatch(r"[1-9]\d{9}", row[0]), row[0]
            assert (DATE_RE if is_activity else SLEEP_DAY_RE).match(row[1]), row[1]
            assert all(NUMBER_RE.match(v) for v in row[2:]), row


def test_dates_are_unpadded(generated: tuple[Path, list[Path]]) -> None:
    days = {row[1] for row in rows_of(generated[1][0])}
    assert "3/12/2016" in days
    assert "4/1/2016" in days
    assert not any(d.startswith("0") or "/0" in d for d in days)


def test_distances_carry_float32_noise(generated: tuple[Path, list[Path]]) -> None:
    distances = [row[3] for row in rows_of(generated[1][0])]
    noisy = [d for d in distances if len(d.split(".")[-1]) > 6]
    assert len(noisy) > len(distances) / 2
    assert sample_data.fitbit_float(7.11) == "7.1100001335144"
    assert sample_data.fitbit_float(0.46) == "0.46000000834465"
    assert sample_data.fitbit_float(8.5) == "8.5"
    assert sample_data.fitbit_float(0.0) == "0"


def activity_rows(paths: list[Path]) -> list[list[str]]:
    return [row for p in paths if p.name == "dailyActivity_merged.csv" for row in rows_of(p)]


def test_minutes_are_consistent_and_distances_add_up(generated: tuple[Path, list[Path]]) -> None:
    for row in activity_rows(generated[1]):
        minutes = [int(v) for v in row[10:14]]
        assert all(m >= 0 for m in minutes)
        assert sum(minutes) <= 1440
        total, tracker, _logged, *parts = (float(v) for v in row[3:10])
        assert total == tracker
        assert all(p >= 0 for p in parts)
        assert sum(parts) == pytest.approx(total, abs=0.05)
        if row[2] == "0":
            assert minutes == [0, 0, 0, 1440]
            assert total == 0


def test_each_user_has_one_row_per_day(generated: tuple[Path, list[Path]]) -> None:
    per_user: defaultdict[str, set[str]] = defaultdict(set)
    rows = activity_rows(generated[1])
    for row in rows:
        per_user[row[0]].add(row[1])
    assert len(per_user) == 12
    assert all(len(days) == 60 for days in per_user.values())
    assert len(rows) == 12 * 60


def steps_by_user(paths: list[Path]) -> dict[int, list[int]]:
    steps: defaultdict[int, list[int]] = defaultdict(list)
    for row in activity_rows(paths):
        steps[int(row[0])].append(int(row[2]))
    return steps


PROFILE_CLASS = {
    "steady": "consistent",
    "declining": "degrading",
    "recovering": "improving",
    "sparse": "insufficient_data",
}


def trend_class(steps: list[int]) -> str:
    """The dbt trend rule (dbt/models/marts/user_engagement_trend.sql) on one user's days.

    The mean of the last 14 days over the mean of the first 14 from the first active day (a
    non-worn day counts as 0); a baseline needs 14 active days and both windows 28 days.
    """
    active = [i for i, s in enumerate(steps) if s > 0]
    if len(active) < 14 or len(steps) - active[0] < 28:
        return "insufficient_data"
    early = statistics.mean(steps[active[0] : active[0] + 14])
    ratio = statistics.mean(steps[-14:]) / early
    return "degrading" if ratio < 0.8 else "improving" if ratio > 1.2 else "consistent"


@pytest.mark.parametrize("seed", [7, 1, 2, 3, 11])
def test_each_profile_lands_in_its_trend_class(tmp_path: Path, seed: int) -> None:
    steps = steps_by_user(generate(tmp_path, users=8, days=60, seed=seed))
    for plan in plan_users(8, seed):
        assert trend_class(steps[plan.user_id]) == PROFILE_CLASS[plan.profile], plan


def test_every_trend_class_is_present_and_visible_in_the_data(
    generated: tuple[Path, list[Path]],
) -> None:
    plans = plan_users(12, 7)
    assert sorted(p.profile for p in plans) == sorted(["steady", "declining", "recovering", "sparse"] * 3)
    steps = steps_by_user(generated[1])
    for plan in plans:
        days = steps[plan.user_id]
        non_worn = days.count(0) / len(days)
        if plan.profile == "sparse":
            assert non_worn > 0.5 and len(days) - days.count(0) < 14
        else:
            assert non_worn < 0.1
            assert 0 not in days[:14], "a new tracker is worn every day of the first two weeks"
        if plan.profile == "recovering":
            assert statistics.mean(days[3:14]) < 0.6 * statistics.mean(days[-14:])


def test_sleep_rows_are_plausible(generated: tuple[Path, list[Path]]) -> None:
    worn = {(r[0], r[1]) for r in activity_rows(generated[1]) if r[2] != "0"}
    sleep = [row for p in generated[1] if p.name == "sleepDay_merged.csv" for row in rows_of(p)]
    assert sleep
    for row in sleep:
        records, asleep, in_bed = (int(v) for v in row[2:])
        assert records >= 1 and 0 < asleep <= in_bed <= 1440
        assert (row[0], row[1].split(" ")[0]) in worn


def test_rejects_nonsense_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, users=0)
    with pytest.raises(ValueError):
        generate(tmp_path, days=0)


def test_one_day_gives_one_period(tmp_path: Path) -> None:
    written = generate(tmp_path, users=4, days=1, start=date(2020, 1, 5))
    assert {p.parent.name for p in written} == {"2020-01-05_2020-01-05"}
