"""``wearable-pipeline report``: the engagement answer, read from the dbt marts.

Are users keeping up consistent daily activity, or is engagement degrading? The report prints
the cohort's weekly percent of baseline, how many users fall in each trend class, and the users
whose activity declined the most; ``--json`` prints the same as one JSON object, ``--plot``
also draws it (matplotlib, the ``plot`` extra). The rule behind the classes lives in the dbt
project (docs/dbt-models.md); this module only reads its results.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from watcher.freshness import data_as_of

EXIT_OK, EXIT_NO_DATA, EXIT_USAGE = 0, 1, 2  # the CLI's codes: 1 = nothing to report yet

TREND_CLASSES = ("consistent", "degrading", "improving", "insufficient_data")
MARTS_SCHEMA = "marts"
# weeks observed by fewer users than this share of week 0 are too thin to call a cohort trend
COHORT_MIN_SHARE = 0.5


@dataclass(frozen=True)
class CohortWeek:
    week_number: int
    users_observed: int
    users_active: int
    mean_pct_of_baseline: float | None
    median_pct_of_baseline: float | None
    share_consistent: float
    share_degrading: float
    share_improving: float
    share_insufficient_data: float


@dataclass(frozen=True)
class DecliningUser:
    user_id: int
    trend_ratio: float
    early_pct_of_baseline: float | None
    late_pct_of_baseline: float | None
    late_active_days: int
    last_observed_date: dt.date | None


@dataclass(frozen=True)
class CohortTrend:
    """Mean percent of baseline early (weeks 0-1) and late (the last two well-observed weeks)."""

    early_pct: float
    late_pct: float
    late_weeks: tuple[int, int]

    @property
    def change(self) -> float:
        return self.late_pct - self.early_pct


@dataclass(frozen=True)
class Report:
    class_counts: dict[str, int]
    weeks: list[CohortWeek]
    worst: list[DecliningUser]

    @property
    def users(self) -> int:
        return sum(self.class_counts.values())


class MartsMissing(RuntimeError):
    """The dbt marts do not exist yet (no build has run on this database)."""


def _mart(name: str) -> sql.Identifier:
    return sql.Identifier(MARTS_SCHEMA, name)


def _require_marts(conn: psycopg.Connection[Any]) -> None:
    needed = ("cohort_weekly_engagement", "user_engagement_trend")
    for name in needed:
        found = conn.execute("SELECT to_regclass(%s)", (f"{MARTS_SCHEMA}.{name}",)).fetchone()
        if found is None or found[0] is None:
            raise MartsMissing(name)


def fetch_report(conn: psycopg.Connection[Any], *, limit: int) -> Report:
    """Read the three parts of the answer from the marts."""
    _require_marts(conn)
    counts = dict.fromkeys(TREND_CLASSES, 0)
    query = sql.SQL("SELECT trend_class, count(*) FROM {} GROUP BY trend_class").format(
        _mart("user_engagement_trend")
    )
    for trend_class, count in conn.execute(query):
        counts[str(trend_class)] = int(count)
    weeks_query = sql.SQL(
        "SELECT week_number, users_observed, users_active, mean_pct_of_baseline,"
        " median_pct_of_baseline, share_consistent, share_degrading, share_improving, share_insufficient_data"
        " FROM {} ORDER BY week_number"
    ).format(_mart("cohort_weekly_engagement"))
    weeks = [CohortWeek(*row) for row in conn.execute(weeks_query)]
    worst_query = sql.SQL(
        "SELECT user_id, trend_ratio, early_pct_of_baseline, late_pct_of_baseline,"
        " late_active_days, last_observed_date FROM {}"
        " WHERE trend_class = 'degrading' ORDER BY trend_ratio, user_id LIMIT %s"
    ).format(_mart("user_engagement_trend"))
    worst = [DecliningUser(*row) for row in conn.execute(worst_query, (max(0, limit),))]
    return Report(counts, weeks, worst)


def cohort_trend(weeks: list[CohortWeek]) -> CohortTrend | None:
    """Weeks 0-1 against the last two weeks still observed by half of the week-0 cohort."""
    by_number = {w.week_number: w for w in weeks if w.mean_pct_of_baseline is not None}
    if 0 not in by_number:
        return None
    floor = max(1, COHORT_MIN_SHARE * by_number[0].users_observed)
    solid = sorted(n for n, w in by_number.items() if w.users_observed >= floor)
    early = [by_number[n] for n in solid if n <= 1]
    late_numbers = solid[-2:]
    if len(solid) < 4 or not early:
        return None
    late = [by_number[n] for n in late_numbers]
    return CohortTrend(
        early_pct=_user_weighted_mean(early),
        late_pct=_user_weighted_mean(late),
        late_weeks=(late_numbers[0], late_numbers[-1]),
    )


def _user_weighted_mean(weeks: list[CohortWeek]) -> float:
    total_users = sum(w.users_observed for w in weeks)
    weighted = sum((w.mean_pct_of_baseline or 0.0) * w.users_observed for w in weeks)
    return weighted / total_users


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _headline(report: Report) -> str:
    classified = report.users - report.class_counts["insufficient_data"]
    if classified == 0:
        return "No user has enough data for a trend yet."
    degrading = report.class_counts["degrading"]
    return (
        f"Engagement is degrading for {degrading} of {classified} users with enough data"
        f" ({degrading / classified:.0%})."
    )


def _trend_line(trend: CohortTrend | None) -> str:
    if trend is None:
        return "Cohort trend: not enough well-observed weeks yet."
    first, last = trend.late_weeks
    direction = "down" if trend.change < 0 else "up"
    return (
        f"Cohort trend: {_pct(trend.early_pct)} of baseline in weeks 0-1, {_pct(trend.late_pct)}"
        f" in weeks {first}-{last} ({direction} {abs(100 * trend.change):.0f} points)."
    )


def format_text(report: Report) -> str:
    """The report as terminal text."""
    lines = [_headline(report), _trend_line(cohort_trend(report.weeks)), ""]
    lines.append(f"Users by trend ({report.users} in all):")
    for trend_class in TREND_CLASSES:
        count = report.class_counts[trend_class]
        share = count / report.users if report.users else 0.0
        lines.append(f"  {trend_class:<18} {count:>6}  {share:>4.0%}")
    lines += ["", "% of baseline: steps per observed day against each user's own baseline"]
    lines.append("week  users  active   mean  median  degrading")
    for week in report.weeks:
        lines.append(
            f"{week.week_number:>4}  {week.users_observed:>5}  {week.users_active:>6}"
            f"  {_pct(week.mean_pct_of_baseline):>5}  {_pct(week.median_pct_of_baseline):>6}"
            f"  {week.share_degrading:>9.0%}"
        )
    lines += ["", "Worst-declining users (last 14 days against the first 14):"]
    if not report.worst:
        lines.append("  none")
    for user in report.worst:
        lines.append(
            f"  {user.user_id}  {_pct(user.early_pct_of_baseline)} -> {_pct(user.late_pct_of_baseline)}"
            f" of baseline (ratio {user.trend_ratio:.2f}, {user.late_active_days} active days"
            f" of the last 14, last seen {user.last_observed_date})"
        )
    return "\n".join(lines)


def as_json_dict(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    trend = cohort_trend(report.weeks)
    return {
        "users": report.users,
        "classes": report.class_counts,
        "cohort_trend": None if trend is None else {**asdict(trend), "change": trend.change},
        "weeks": [asdict(w) for w in report.weeks],
        "worst_declining": [
            {**asdict(u), "last_observed_date": _iso(u.last_observed_date)} for u in report.worst
        ],
    }


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def run_report(conninfo: str, *, as_json: bool, plot_path: Path | None, limit: int = 5) -> int:
    """Print the engagement report; optionally draw it into ``plot_path``. Return an exit code."""
    if plot_path is not None:
        from watcher.report_plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            print(f"wearable-pipeline report: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        with psycopg.connect(conninfo) as conn:
            as_of = data_as_of(conn)
            report = fetch_report(conn, limit=limit)
    except MartsMissing as exc:
        if not as_json:
            print(as_of.line())
        print(
            f"wearable-pipeline report: marts.{exc} does not exist yet; load data and let the"
            " pipeline run its dbt build first (wearable-pipeline watch --once).",
            file=sys.stderr,
        )
        return EXIT_NO_DATA
    if as_json:
        print(json.dumps({"data_as_of": as_of.as_dict(), **as_json_dict(report)}, indent=2))
    else:
        print(as_of.line() + "\n\n" + format_text(report))
    if plot_path is not None:
        from watcher.report_plot import draw

        draw(report, plot_path)
        if not as_json:
            print(f"\nPlot written to {plot_path}")
    return EXIT_OK
