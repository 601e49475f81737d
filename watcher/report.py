"""``wearable-pipeline report``: the engagement answer, read from the dbt marts.

Are users keeping up consistent daily activity, or is engagement degrading? The report prints
the cohort's weekly percent of baseline, how many users fall in each trend class, and the users
whose activity declined the most. A cohort level is a median with its interquartile range before
it is a mean, and only a reliable week (seen by enough users, ``is_reliable`` in the mart) is
headlined; ``--json`` prints the same as one JSON object, ``--plot``
also draws it (matplotlib, the ``plot`` extra). The rule behind the classes lives in the dbt
project (docs/dbt-models.md); this module only reads its results.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from watcher.freshness import data_as_of

EXIT_OK, EXIT_NO_DATA, EXIT_USAGE = 0, 1, 2  # the CLI's codes: 1 = nothing to report yet

TREND_CLASSES = ("consistent", "degrading", "improving", "insufficient_data")
MARTS_SCHEMA = "marts"
EARLY_WEEKS = (0, 1)  # the cohort trend compares these weeks with the last two reliable ones


@dataclass(frozen=True)
class CohortWeek:
    week_number: int
    users_observed: int
    users_active: int
    mean_pct_of_baseline: float | None
    median_pct_of_baseline: float | None
    p25_pct_of_baseline: float | None
    p75_pct_of_baseline: float | None
    is_reliable: bool
    reliable_min_users: int
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
class Level:
    """A cohort level over user-weeks: median with its quartiles (percentile_cont), and the mean."""

    median: float
    p25: float
    p75: float
    mean: float
    user_weeks: int

    @classmethod
    def of(cls, values: list[float]) -> Level:
        if len(values) == 1:
            q1 = q2 = q3 = values[0]
        else:  # "inclusive" interpolates as PostgreSQL's percentile_cont does
            q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(q2, q1, q3, statistics.fmean(values), len(values))


@dataclass(frozen=True)
class CohortTrend:
    """The cohort's level in weeks 0-1 (early) against the last two reliable weeks (late)."""

    early: Level
    late: Level
    early_weeks: tuple[int, int]
    late_weeks: tuple[int, int]

    @property
    def median_change(self) -> float:
        return self.late.median - self.early.median

    @property
    def mean_change(self) -> float:
        return self.late.mean - self.early.mean

    @property
    def disagree(self) -> bool:
        """Mean and median move in opposite directions: neither alone is the answer."""
        return self.median_change * self.mean_change < 0


@dataclass(frozen=True)
class TableQuality:
    """What became of one raw table's rows (sums of marts.user_data_quality)."""

    raw_table: str
    raw_rows: int
    kept_rows: int
    superseded_rows: int
    duplicate_rows: int
    conflicting_rows: int
    partial_days: int | None  # days left out of the answer as partial; None: not applicable


@dataclass(frozen=True)
class Report:
    class_counts: dict[str, int]
    weeks: list[CohortWeek]
    worst: list[DecliningUser]
    # each user's weekly percent of baseline, for the weeks the cohort trend compares
    trend_values: dict[int, list[float]] = field(default_factory=dict)
    quality: list[TableQuality] = field(default_factory=list)

    @property
    def users(self) -> int:
        return sum(self.class_counts.values())


class MartsMissing(RuntimeError):
    """The dbt marts do not exist yet (no build has run on this database)."""


def _mart(name: str) -> sql.Identifier:
    return sql.Identifier(MARTS_SCHEMA, name)


def _require_marts(conn: psycopg.Connection[Any]) -> None:
    needed = ("cohort_weekly_engagement", "user_engagement_trend", "user_data_quality")
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
        " median_pct_of_baseline, p25_pct_of_baseline, p75_pct_of_baseline, is_reliable,"
        " reliable_min_users, share_consistent, share_degrading, share_improving,"
        " share_insufficient_data FROM {} ORDER BY week_number"
    ).format(_mart("cohort_weekly_engagement"))
    weeks = [CohortWeek(*row) for row in conn.execute(weeks_query)]
    trend_values: dict[int, list[float]] = {}
    compared = trend_weeks(weeks)
    if compared is not None:
        values_query = sql.SQL(
            "SELECT week_number, mean_pct_of_baseline FROM {}"
            " WHERE week_number = ANY(%s) AND mean_pct_of_baseline IS NOT NULL"
        ).format(_mart("user_weekly_engagement"))
        for number, value in conn.execute(values_query, ([*compared[0], *compared[1]],)):
            trend_values.setdefault(int(number), []).append(float(value))
    worst_query = sql.SQL(
        "SELECT user_id, trend_ratio, early_pct_of_baseline, late_pct_of_baseline,"
        " late_active_days, last_observed_date FROM {}"
        " WHERE trend_class = 'degrading' ORDER BY trend_ratio, user_id LIMIT %s"
    ).format(_mart("user_engagement_trend"))
    worst = [DecliningUser(*row) for row in conn.execute(worst_query, (max(0, limit),))]
    return Report(counts, weeks, worst, trend_values, fetch_quality(conn))


def fetch_quality(conn: psycopg.Connection[Any]) -> list[TableQuality]:
    """Per raw table: rows kept, and rows and days left out of the answer, with the reason."""
    query = sql.SQL(
        "SELECT raw_table, sum(raw_rows), sum(kept_rows), sum(superseded_rows), sum(duplicate_rows),"
        " sum(conflicting_rows), sum(partial_days) FROM {} GROUP BY raw_table ORDER BY raw_table"
    ).format(_mart("user_data_quality"))
    quality = []
    for table, raw, kept, superseded, duplicate, conflicting, partial in conn.execute(query):
        quality.append(
            TableQuality(
                raw_table=str(table),
                raw_rows=int(raw),
                kept_rows=int(kept),
                superseded_rows=int(superseded),
                duplicate_rows=int(duplicate),
                conflicting_rows=int(conflicting),
                partial_days=None if partial is None else int(partial),
            )
        )
    return quality


def latest_reliable_week(weeks: list[CohortWeek]) -> CohortWeek | None:
    """The last week seen by enough users to speak for the cohort (the headline's week)."""
    reliable = [w for w in weeks if w.is_reliable and w.median_pct_of_baseline is not None]
    return max(reliable, key=lambda w: w.week_number, default=None)


def trend_weeks(weeks: list[CohortWeek]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Weeks 0-1 and the last two reliable weeks after them; None without four reliable weeks."""
    reliable = sorted(w.week_number for w in weeks if w.is_reliable and w.mean_pct_of_baseline is not None)
    if not set(EARLY_WEEKS) <= set(reliable) or len(reliable) < 4:
        return None
    return EARLY_WEEKS, (reliable[-2], reliable[-1])


def cohort_trend(weeks: list[CohortWeek], values: dict[int, list[float]]) -> CohortTrend | None:
    """The user-weeks of weeks 0-1 against those of the last two reliable weeks."""
    compared = trend_weeks(weeks)
    if compared is None:
        return None
    early_weeks, late_weeks = compared
    early = [v for n in early_weeks for v in values.get(n, [])]
    late = [v for n in late_weeks for v in values.get(n, [])]
    if not early or not late:
        return None
    return CohortTrend(Level.of(early), Level.of(late), early_weeks, late_weeks)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def _points(change: float) -> str:
    return f"{'down' if change < 0 else 'up'} {abs(100 * change):.0f} points"


def _iqr(low: float | None, high: float | None) -> str:
    return "IQR -" if low is None or high is None else f"IQR {100 * low:.0f}-{100 * high:.0f} %"


def _headline(report: Report) -> str:
    classified = report.users - report.class_counts["insufficient_data"]
    if classified == 0:
        return "No user has enough data for a trend yet."
    degrading = report.class_counts["degrading"]
    return (
        f"Engagement is degrading for {degrading} of {classified} users with enough data"
        f" ({degrading / classified:.0%})."
    )


def _latest_week_line(weeks: list[CohortWeek]) -> str:
    week = latest_reliable_week(weeks)
    if week is None:
        needed = max((w.reliable_min_users for w in weeks), default=None)
        enough = "" if needed is None else f" (at least {needed})"
        return f"Cohort level: no week is seen by enough users{enough} to speak for the cohort yet."
    return (
        f"Cohort level, week {week.week_number} (the latest reliable week, {week.users_observed}"
        f" users): median {_pct(week.median_pct_of_baseline)} of baseline"
        f" ({_iqr(week.p25_pct_of_baseline, week.p75_pct_of_baseline)}),"
        f" mean {_pct(week.mean_pct_of_baseline)}."
    )


def _trend_line(trend: CohortTrend | None) -> str:
    if trend is None:
        return "Cohort trend: not enough reliable weeks yet (weeks 0, 1 and two later ones)."
    (e0, e1), (l0, l1) = trend.early_weeks, trend.late_weeks
    early, late = trend.early, trend.late
    medians = (
        f"the median went from {_pct(early.median)} ({_iqr(early.p25, early.p75)}) to"
        f" {_pct(late.median)} ({_iqr(late.p25, late.p75)})"
    )
    means = f"the mean from {_pct(early.mean)} to {_pct(late.mean)}"
    span = f"Cohort trend, weeks {e0}-{e1} to weeks {l0}-{l1}"
    if trend.disagree:
        pulled = "up" if trend.mean_change > 0 else "down"
        return (
            f"{span}: mean and median move in opposite directions: {medians},"
            f" {_points(trend.median_change)}; {means}, {_points(trend.mean_change)}."
            f" A few users far from the rest pull the mean {pulled}; neither figure alone is"
            " the answer."
        )
    return f"{span}: {medians}, {_points(trend.median_change)}; {means}, {_points(trend.mean_change)}."


def format_text(report: Report) -> str:
    """The report as terminal text."""
    lines = [
        _headline(report),
        _latest_week_line(report.weeks),
        _trend_line(cohort_trend(report.weeks, report.trend_values)),
        "",
    ]
    lines.append(f"Users by trend ({report.users} in all):")
    for trend_class in TREND_CLASSES:
        count = report.class_counts[trend_class]
        share = count / report.users if report.users else 0.0
        lines.append(f"  {trend_class:<18} {count:>6}  {share:>4.0%}")
    lines += ["", "% of baseline: steps per observed day against each user's own baseline"]
    lines.append("week  users  active  median       IQR     mean  degrading")
    for week in report.weeks:
        iqr = _iqr(week.p25_pct_of_baseline, week.p75_pct_of_baseline).removeprefix("IQR ")
        lines.append(
            f"{week.week_number:>4}  {week.users_observed:>5}  {week.users_active:>6}"
            f"  {_pct(week.median_pct_of_baseline):>6}  {iqr:>9}  {_pct(week.mean_pct_of_baseline):>6}"
            f"  {week.share_degrading:>9.0%}{'' if week.is_reliable else '  (too few users)'}"
        )
    if any(not w.is_reliable for w in report.weeks):
        needed = max(w.reliable_min_users for w in report.weeks)
        lines.append(f"(too few users: fewer than {needed}; such a week is never headlined)")
    lines += ["", "Worst-declining users (last 14 days against the first 14):"]
    if not report.worst:
        lines.append("  none")
    for user in report.worst:
        lines.append(
            f"  {user.user_id}  {_pct(user.early_pct_of_baseline)} -> {_pct(user.late_pct_of_baseline)}"
            f" of baseline (ratio {user.trend_ratio:.2f}, {user.late_active_days} active days"
            f" of the last 14, last seen {user.last_observed_date})"
        )
    lines += ["", *_quality_lines(report.quality)]
    return "\n".join(lines)


def _quality_lines(quality: list[TableQuality]) -> list[str]:
    lines = ["Data quality (raw rows left out of the answer, and why):"]
    if not quality:
        lines.append("  no rows yet")
    for table in quality:
        days = table.partial_days
        partial = "" if days is None else f"; {days} partial day{'' if days == 1 else 's'} left out"
        lines.append(
            f"  {table.raw_table}: {table.raw_rows} rows, {table.kept_rows} kept;"
            f" {table.superseded_rows} superseded by a newer export,"
            f" {table.duplicate_rows} exact duplicates collapsed,"
            f" {table.conflicting_rows} conflicting in one file{partial}"
        )
    return lines


def as_json_dict(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    trend = cohort_trend(report.weeks, report.trend_values)
    latest = latest_reliable_week(report.weeks)
    return {
        "users": report.users,
        "classes": report.class_counts,
        "latest_reliable_week": None if latest is None else asdict(latest),
        "cohort_trend": None
        if trend is None
        else {
            **asdict(trend),
            "median_change": trend.median_change,
            "mean_change": trend.mean_change,
            "mean_and_median_disagree": trend.disagree,
        },
        "weeks": [asdict(w) for w in report.weeks],
        "data_quality": {q.raw_table: asdict(q) for q in report.quality},
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
