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
    return steady + declining + short


def test_report_prints_classes_and_the_worst_decliner(
    migrated_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(migrated_url) as conn:
        load_file(conn, "daily_activity", "export/dailyActivity_merged.csv", _users())
    run_dbt(migrated_url, ["build"], target_path=tmp_path / "target")
    capsys.readouterr()

    assert run_report(migrated_url, as_json=True, plot_path=None) == EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["classes"] == {
        "consistent": 1,
        "degrading": 1,
        "improving": 0,
        "insufficient_data": 1,
    }
    assert [u["user_id"] for u in answer["worst_declining"]] == [2]
    assert answer["worst_declining"][0]["trend_ratio"] == pytest.approx(0.4)
    assert answer["weeks"][0]["users_observed"] == 3

    plot = tmp_path / "trend.png"
    assert run_report(migrated_url, as_json=False, plot_path=plot, limit=1) == EXIT_OK
    text = capsys.readouterr().out
    assert "Engagement is degrading for 1 of 2 users with enough data (50%)." in text
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_report_before_any_build_says_what_to_do(
    migrated_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_report(migrated_url, as_json=False, plot_path=None) == EXIT_NO_DATA
    assert "does not exist yet" in capsys.readouterr().err
