"""``wearable-pipeline report`` against marts built by dbt from constructed users."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg
import pytest

from tests.dbtkit import activity_row, load_file, run_dbt
from watcher.report import EXIT_NO_DATA, EXIT_OK, run_report

pytestmark = pytest.mark.slow

START = dt.date(2016, 3, 1)


def _day(user: int, day: int, steps: int) -> tuple[object, ...]:
    return activity_row(user, START + dt.timedelta(days=day), steps)


def _users() -> list[tuple[object, ...]]:
    steady = [_day(1, d, 10000 + (d % 3) * 100) for d in range(42)]
    declining = [_day(2, d, 10000 if d < 21 else 4000) for d in range(42)]
    short = [_day(3, d, 8000) for d in range(10)]
    # the only user of weeks 6 to 9: never a headline; his last day (69) is the export's, partial
    loner = [_day(4, d, 6000 if d < 69 else 50) for d in range(70)]
    return steady + declining + short + loner


def test_report_prints_classes_and_the_worst_decliner(
    migrated_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # an older export, loaded first: user 1's days 0-4 again (exact duplicates of the newer
    # export's), his day 5 partial (superseded), and user 2's day 3 again (a duplicate)
    older = [_day(1, d, 10000 + (d % 3) * 100) for d in range(5)] + [_day(1, 5, 300), _day(2, 3, 10000)]
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "old/dailyActivity_merged.csv", older)
        load_file(conn, "daily_activity", "export/dailyActivity_merged.csv", _users())
    # a small cohort: a week is reliable with 2 users (the default minimum is 10)
    run_dbt(migrated_url, ["build", "--vars", "{cohort_min_users: 2}"], target_path=tmp_path / "target")
    capsys.readouterr()

    assert run_report(migrated_url, as_json=True, plot_path=None) == EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["classes"] == {
        "consistent": 2,
        "degrading": 1,
        "improving": 0,
        "insufficient_data": 1,
    }
    assert [u["user_id"] for u in answer["worst_declining"]] == [2]
    assert answer["worst_declining"][0]["trend_ratio"] == pytest.approx(0.4)
    assert answer["weeks"][0]["users_observed"] == 4
    assert [w["is_reliable"] for w in answer["weeks"]] == [True] * 6 + [False] * 4
    latest = answer["latest_reliable_week"]
    assert (latest["week_number"], latest["users_observed"]) == (5, 3)
    assert latest["median_pct_of_baseline"] == pytest.approx(1.0, abs=0.02)
    trend = answer["cohort_trend"]
    assert (trend["early_weeks"], trend["late_weeks"]) == ([0, 1], [4, 5])

    plot = tmp_path / "trend.png"
    assert run_report(migrated_url, as_json=False, plot_path=plot, limit=1) == EXIT_OK
    text = capsys.readouterr().out
    assert "Engagement is degrading for 1 of 3 users with enough data (33%)." in text
    assert "Cohort level, week 5 (the latest reliable week, 3 users): median " in text
    assert "Cohort trend, weeks 0-1 to weeks 4-5:" in text
    assert (
        "  daily_activity: 171 rows, 164 kept; 1 superseded by a newer export, 6 exact duplicates"
        " collapsed, 0 conflicting in one file; 1 partial day left out"  # the loner's day 69
    ) in text
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_report_before_any_build_says_what_to_do(
    migrated_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report(migrated_url, as_json=False, plot_path=None) == EXIT_NO_DATA
    assert "does not exist yet" in capsys.readouterr().err
