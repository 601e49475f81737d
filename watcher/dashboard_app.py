"""A Streamlit page answering "is the cohort keeping up its activity?" at a glance.

It reads the dbt marts: the cohort's weekly activity against baseline (a median with its
interquartile range; weeks seen by too few users are faded and never headlined), the share of
users in each trend class, the cohort by calendar day, the data volume per day, and a drill-down
into one user. Install the extra and run it::

    pip install '.[dashboard]'
    DATABASE_URL=postgresql://... streamlit run watcher/dashboard_app.py

The database is chosen like the pipeline's (``DATABASE_URL``, else ``DB_HOST`` and friends).
The marts keep "pct of baseline" as a ratio (1.0 = the user's own baseline) and shares as
fractions; the page shows both as percentages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd
import psycopg
import streamlit as st
from psycopg import sql

from watcher.config import ConfigError, Overrides, build_settings, redact_conninfo
from watcher.errortext import first_line

TREND_CLASSES = ("consistent", "degrading", "improving", "insufficient_data")
TREND_COLORS = ("#2e7d32", "#c62828", "#1565c0", "#9e9e9e")
BASELINE = 1.0  # a ratio of the user's own baseline
BELOW = 0.8  # cohort_daily_engagement.share_below_80pct
CACHE_SECONDS = 60
MIN_BASELINE_DAYS = (1, 14, 10)  # the daily view's filter: lowest, highest, default

QUERIES: dict[str, sql.SQL] = {
    "cohort": sql.SQL(
        "SELECT week_number, users_observed, users_active, mean_pct_of_baseline, "
        "median_pct_of_baseline, p25_pct_of_baseline, p75_pct_of_baseline, is_reliable, "
        "reliable_min_users, share_degrading "
        "FROM marts.cohort_weekly_engagement ORDER BY week_number"
    ),
    # the cohort by calendar day (marts.cohort_daily_engagement's figures) under the page's
    # filters: users whose baseline rests on at least min_days days, dates, one user or all
    "by_day": sql.SQL(
        "SELECT d.activity_date, count(*) AS users_observed, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY d.steps_pct_of_baseline) AS median_pct_of_baseline, "
        "percentile_cont(0.25) WITHIN GROUP (ORDER BY d.steps_pct_of_baseline) AS p25_pct_of_baseline, "
        "percentile_cont(0.75) WITHIN GROUP (ORDER BY d.steps_pct_of_baseline) AS p75_pct_of_baseline, "
        "avg((d.steps_pct_of_baseline < 0.8)::int)::double precision AS share_below_80pct "
        "FROM marts.user_activity_deviation AS d "
        "JOIN marts.user_baseline_activity AS b USING (user_id) "
        "WHERE d.is_complete_day AND d.steps_pct_of_baseline IS NOT NULL "
        "AND b.baseline_days >= %(min_days)s "
        "AND d.activity_date BETWEEN %(start)s AND %(end)s "
        "AND (%(user_id)s::bigint IS NULL OR d.user_id = %(user_id)s::bigint) "
        "GROUP BY d.activity_date ORDER BY d.activity_date"
    ),
    "date_bounds": sql.SQL(
        "SELECT min(activity_date) AS first, max(activity_date) AS last FROM marts.cohort_daily_engagement"
    ),
    "quality": sql.SQL(
        "SELECT raw_table, sum(raw_rows) AS raw_rows, sum(kept_rows) AS kept, "
        "sum(superseded_rows) AS superseded, sum(duplicate_rows) AS duplicates, "
        "sum(conflicting_rows) AS conflicting, sum(partial_days) AS partial_days "
        "FROM marts.user_data_quality GROUP BY raw_table ORDER BY raw_table"
    ),
    "volume": sql.SQL(
        "SELECT activity_date, row_count, trailing_7d_mean, deviation, is_anomaly "
        "FROM marts.daily_volume_anomaly ORDER BY activity_date"
    ),
    "trends": sql.SQL("SELECT user_id, trend_class FROM marts.user_engagement_trend ORDER BY user_id"),
    "weekly": sql.SQL(
        "SELECT user_id, week_number, week_start, active_days, mean_steps, mean_pct_of_baseline "
        "FROM marts.user_weekly_engagement WHERE user_id = %(user_id)s ORDER BY week_number"
    ),
    "daily": sql.SQL(
        "SELECT activity_date, steps, baseline_steps, steps_pct_of_baseline "
        "FROM marts.user_activity_deviation WHERE user_id = %(user_id)s ORDER BY activity_date"
    ),
    "last_run": sql.SQL(
        "SELECT finished_at, status, files_loaded, rows_loaded, dbt_status "
        "FROM ops.pipeline_runs WHERE finished_at IS NOT NULL ORDER BY run_id DESC LIMIT 1"
    ),
}


class MartsMissingError(RuntimeError):
    """The marts have not been built in this database yet."""


class NoAccessError(RuntimeError):
    """The role may not read a table the page needs."""


@dataclass(frozen=True)
class Headline:
    """The KPI row: the cohort in its latest reliable week (None when no week is reliable)."""

    users: int
    latest_week: int | None
    median: float | None
    p25: float | None
    p75: float | None
    mean: float | None
    share_degrading: float | None
    users_observed: int | None
    min_users: int | None


def database_url() -> str | None:
    """The pipeline's own database setting (watcher.config is the only reader of the environment)."""
    return build_settings(Overrides()).database_url


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def fetch(
    url: str,
    query: str,
    user_id: int | None = None,
    *,
    min_days: int = 1,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> pd.DataFrame:
    """One of QUERIES as a data frame; MartsMissingError when its schema or table is absent."""
    params: dict[str, Any] = {"user_id": user_id, "min_days": min_days, "start": start, "end": end}
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            cur = conn.execute(QUERIES[query], params)
            columns = [d.name for d in cur.description or ()]
            return pd.DataFrame(cur.fetchall(), columns=columns)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise MartsMissingError(first_line(exc)) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise NoAccessError(first_line(exc)) from exc


def trend_shares(trends: pd.DataFrame) -> pd.DataFrame:
    """Users and share of users in each trend class, every class present, in a fixed order."""
    counts = trends["trend_class"].value_counts().reindex(list(TREND_CLASSES), fill_value=0)
    total = int(counts.sum())
    frame = pd.DataFrame({"trend_class": list(TREND_CLASSES), "users": counts.to_numpy()})
    frame["share"] = frame["users"] / total if total else 0.0
    return frame


def headline(cohort: pd.DataFrame, trends: pd.DataFrame) -> Headline:
    """The latest week seen by enough users (is_reliable); a thinner week is never a headline."""
    min_users = None if cohort.empty else int(cohort["reliable_min_users"].max())
    reliable = cohort[cohort["is_reliable"].astype(bool)] if not cohort.empty else cohort
    if reliable.empty:
        return Headline(len(trends), None, None, None, None, None, None, None, min_users)
    last = reliable.sort_values("week_number").iloc[-1]
    return Headline(
        users=len(trends),
        latest_week=int(last["week_number"]),
        median=float(last["median_pct_of_baseline"]),
        p25=float(last["p25_pct_of_baseline"]),
        p75=float(last["p75_pct_of_baseline"]),
        mean=float(last["mean_pct_of_baseline"]),
        share_degrading=float(last["share_degrading"]),
        users_observed=int(last["users_observed"]),
        min_users=min_users,
    )


def user_label(trends: pd.DataFrame, user_id: int) -> str:
    match = trends.loc[trends["user_id"] == user_id, "trend_class"]
    return f"{user_id} ({match.iloc[0]})" if not match.empty else str(user_id)


def render_headline(head: Headline) -> None:
    cols = st.columns(5)
    cols[0].metric("Users", head.users)
    if head.latest_week is None:
        cols[1].metric("Cohort median, % of baseline", "n/a")
        enough = "" if head.min_users is None else f" (at least {head.min_users})"
        st.caption(f"No week is seen by enough users{enough} to speak for the cohort yet.")
        return
    median = head.median or 0.0
    cols[1].metric(
        f"Cohort median, week {head.latest_week}",
        f"{median:.0%}",
        delta=f"{100 * (median - BASELINE):+.0f} pts against baseline",
        help="Median over the week's users of their steps as % of their own baseline.",
    )
    cols[2].metric("Interquartile range", f"{head.p25 or 0.0:.0%} to {head.p75 or 0.0:.0%}")
    cols[3].metric(
        "Users degrading",
        f"{(head.share_degrading or 0.0):.0%}",
        help=f"Of the {head.users_observed} users seen in week {head.latest_week}, the share whose"
        " trend is degrading (the trend-class table counts every user).",
    )
    cols[4].metric("Users observed", head.users_observed)
    mean = head.mean or 0.0
    note = (
        " Mean and median fall on opposite sides of baseline: a few users far from the rest"
        " pull the mean; neither alone is the answer."
        if (mean - BASELINE) * (median - BASELINE) < 0
        else ""
    )
    st.caption(
        f"Week {head.latest_week} is the latest week seen by at least {head.min_users} users"
        f" (later weeks have fewer and are faded below). Mean: {mean:.0%} of baseline.{note}"
    )


def render_cohort_trend(cohort: pd.DataFrame) -> None:
    st.subheader("Cohort activity against baseline")
    if cohort.empty:
        st.info("No weekly activity yet.")
        return
    frame = cohort.assign(reliability=cohort["is_reliable"].map({True: "reliable", False: "too few users"}))
    opacity = alt.Opacity(
        "reliability:N",
        scale=alt.Scale(domain=["reliable", "too few users"], range=[1.0, 0.25]),
        title=None,
    )
    base = alt.Chart(frame).encode(x=alt.X("week_number:O", title="Week"))
    solid = base.transform_filter("datum.is_reliable")  # lines only through reliable weeks
    band = solid.mark_area(color="#90caf9").encode(
        y=alt.Y("p25_pct_of_baseline:Q", title="% of baseline", axis=alt.Axis(format="%")),
        y2="p75_pct_of_baseline:Q",
        opacity=alt.value(0.35),
    )
    median = solid.mark_line(color="#0d47a1").encode(y="median_pct_of_baseline:Q")
    points = base.mark_point(filled=True, size=70, color="#0d47a1").encode(
        y="median_pct_of_baseline:Q",
        opacity=opacity,
        tooltip=[
            "week_number",
            "users_observed",
            "reliability",
            alt.Tooltip("median_pct_of_baseline:Q", format=".0%", title="median"),
            alt.Tooltip("p25_pct_of_baseline:Q", format=".0%", title="25th pct"),
            alt.Tooltip("p75_pct_of_baseline:Q", format=".0%", title="75th pct"),
            alt.Tooltip("mean_pct_of_baseline:Q", format=".0%", title="mean"),
            alt.Tooltip("share_degrading:Q", format=".0%"),
        ],
    )
    mean = solid.mark_line(color="#37474f", strokeDash=[4, 3]).encode(y="mean_pct_of_baseline:Q")
    rule = (
        alt.Chart(pd.DataFrame({"baseline": [BASELINE]}))
        .mark_rule(strokeDash=[6, 4], color="gray")
        .encode(y="baseline:Q")
    )
    st.altair_chart(band + median + mean + points + rule, width="stretch")
    thin = frame.loc[~frame["is_reliable"].astype(bool), "week_number"].tolist()
    st.caption(
        "Median over users of their daily steps as % of their own baseline, with the interquartile "
        "band; dashed dark: the mean (a day without the tracker counts as 0, partial days are left "
        "out). Week 0 starts on each user's first active day; grey dashes: 100%."
        + (f" Faded: weeks {', '.join(map(str, thin))}, seen by too few users." if thin else "")
    )


def render_trend_shares(trends: pd.DataFrame) -> None:
    st.subheader("Users by trend class")
    shares = trend_shares(trends)
    chart = (
        alt.Chart(shares)
        .mark_bar()
        .encode(
            x=alt.X("share:Q", title="Share of users", axis=alt.Axis(format="%")),
            y=alt.Y("trend_class:N", title=None, sort=list(TREND_CLASSES)),
            color=alt.Color(
                "trend_class:N",
                scale=alt.Scale(domain=list(TREND_CLASSES), range=list(TREND_COLORS)),
                legend=None,
            ),
            tooltip=["trend_class", "users", alt.Tooltip("share:Q", format=".0%")],
        )
    )
    st.altair_chart(chart, width="stretch")
    st.dataframe(
        shares.assign(share=shares["share"] * 100),
        hide_index=True,
        width="stretch",
        column_config={"share": st.column_config.NumberColumn("share", format="%.0f%%")},
    )


def render_daily_view(url: str, trends: pd.DataFrame) -> None:
    """The cohort by calendar day, as the batch version showed it, with its filters."""
    st.subheader("Cohort by calendar day")
    bounds = fetch(url, "date_bounds")
    if bounds.empty or pd.isna(bounds.iloc[0]["first"]):
        st.info("No complete day yet.")
        return
    first: dt.date = bounds.iloc[0]["first"]
    last: dt.date = bounds.iloc[0]["last"]
    low, high, default = MIN_BASELINE_DAYS
    cols = st.columns(3)
    min_days = cols[0].slider(
        "Minimum baseline days", low, high, default, key="min_baseline_days",
        help="Only users whose baseline rests on at least this many active days.",
    )  # fmt: skip
    picked = cols[1].date_input(
        "Dates", value=(first, last), min_value=first, max_value=last, key="date_range"
    )
    start, end = _date_range(picked, first, last)
    ids = [int(v) for v in trends["user_id"]]
    user_id = cols[2].selectbox(
        "User", [None, *ids], key="daily_user",
        format_func=lambda uid: "All users" if uid is None else user_label(trends, uid),
    )  # fmt: skip
    days = fetch(url, "by_day", user_id, min_days=int(min_days), start=start, end=end)
    if days.empty:
        st.info("No complete day of a user with such a baseline in that range.")
        return
    for chart in daily_view_charts(days):
        st.altair_chart(chart, width="stretch")
    st.caption(
        "Per calendar day, over the users with a baseline on at least the chosen number of days "
        "and a complete day that date (the day an export was taken is left out): median % of "
        "baseline with the interquartile band, users observed, and the share below "
        f"{BELOW:.0%} of baseline."
    )


def _date_range(picked: Any, first: dt.date, last: dt.date) -> tuple[dt.date, dt.date]:
    """date_input gives a tuple of one or two dates while the user is picking."""
    values = list(picked) if isinstance(picked, list | tuple) else [picked]
    start = values[0] if values else first
    end = values[1] if len(values) > 1 else last
    return start, end


def daily_view_charts(days: pd.DataFrame) -> list[alt.Chart | alt.LayerChart]:
    """Median with IQR band, users per day, share below 0.8: three panels on one date axis."""
    x = alt.X("activity_date:T", title=None)
    base = alt.Chart(days).encode(x=x)
    band = base.mark_area(color="#90caf9", opacity=0.35).encode(
        y=alt.Y("p25_pct_of_baseline:Q", title="% of baseline", axis=alt.Axis(format="%")),
        y2="p75_pct_of_baseline:Q",
    )
    median = base.mark_line(color="#0d47a1").encode(
        y="median_pct_of_baseline:Q",
        tooltip=[
            alt.Tooltip("activity_date:T", title="date"),
            "users_observed",
            alt.Tooltip("median_pct_of_baseline:Q", format=".0%", title="median"),
            alt.Tooltip("p25_pct_of_baseline:Q", format=".0%", title="25th pct"),
            alt.Tooltip("p75_pct_of_baseline:Q", format=".0%", title="75th pct"),
            alt.Tooltip("share_below_80pct:Q", format=".0%", title="below 80%"),
        ],
    )
    rule = alt.Chart(pd.DataFrame({"baseline": [BASELINE]})).mark_rule(strokeDash=[6, 4], color="gray")
    users = base.mark_bar(color="#bdbdbd").encode(y=alt.Y("users_observed:Q", title="users"))
    below = base.mark_line(color="#c62828", point=True).encode(
        y=alt.Y("share_below_80pct:Q", title=f"share below {BELOW:.0%}", axis=alt.Axis(format="%"))
    )
    return [
        (band + median + rule.encode(y="baseline:Q")).properties(height=220),
        users.properties(height=90),
        below.properties(height=120),
    ]


def render_quality(url: str) -> None:
    """Per raw table: rows kept, and rows and days left out of the answer, with the reason."""
    st.subheader("Data quality")
    quality = fetch(url, "quality")
    if quality.empty:
        st.info("No rows yet.")
        return
    st.dataframe(
        quality,
        hide_index=True,
        width="stretch",
        column_config={
            "raw_table": st.column_config.TextColumn("table"),
            "raw_rows": st.column_config.NumberColumn("raw rows"),
            "superseded": st.column_config.NumberColumn("superseded", help="by a newer export"),
            "duplicates": st.column_config.NumberColumn("duplicates", help="exact duplicates collapsed"),
            "conflicting": st.column_config.NumberColumn("conflicting", help="other values in one file"),
            "partial_days": st.column_config.NumberColumn("partial days", help="left out of the answer"),
        },
    )
    st.caption(
        "Of the raw rows of a user and day one is kept, the newest export's; the others are left "
        "out. A partial day (the day an export was taken) stays visible per user but counts in no "
        "baseline, trend or cohort figure until a later export covers it."
    )


def render_volume(url: str) -> None:
    """Rows per calendar date against the trailing 7-day mean; flagged dates in red."""
    st.subheader("Data volume per day")
    volume = fetch(url, "volume")
    if volume.empty:
        st.info("No rows yet.")
        return
    base = alt.Chart(volume).encode(x=alt.X("activity_date:T", title=None))
    bars = base.mark_bar().encode(
        y=alt.Y("row_count:Q", title="user-days"),
        color=alt.Color(
            "is_anomaly:N",
            scale=alt.Scale(domain=[False, True], range=["#90a4ae", "#c62828"]),
            legend=alt.Legend(title="flagged"),
        ),
        tooltip=[
            alt.Tooltip("activity_date:T", title="date"),
            "row_count",
            alt.Tooltip("trailing_7d_mean:Q", format=".1f"),
            alt.Tooltip("deviation:Q", format="+.0%"),
        ],
    )
    trailing = base.mark_line(color="#37474f").encode(y="trailing_7d_mean:Q")
    st.altair_chart(bars + trailing, width="stretch")
    newest = volume.iloc[-1]
    flagged = int(volume["is_anomaly"].sum())
    st.caption(
        f"Flagged: a day whose rows deviate from the mean of the 7 days before by more than the "
        f"threshold (dbt var volume_anomaly_threshold). {flagged} day(s) flagged; the newest "
        f"({newest['activity_date']:%Y-%m-%d}, {int(newest['row_count'])} rows) "
        + ("is flagged." if bool(newest["is_anomaly"]) else "is not.")
    )


def render_drilldown(url: str, trends: pd.DataFrame) -> None:
    st.subheader("One user")
    if trends.empty:
        st.info("No users yet.")
        return
    ids = [int(v) for v in trends["user_id"]]
    user_id = st.selectbox("User", ids, format_func=lambda uid: user_label(trends, uid), key="user_id")
    if user_id is None:
        return
    daily = fetch(url, "daily", int(user_id))
    weekly = fetch(url, "weekly", int(user_id))
    st.markdown(f"**User {user_label(trends, int(user_id))}**")
    if not daily.empty:
        st.altair_chart(daily_chart(daily), width="stretch")
    st.dataframe(
        weekly.drop(columns=["user_id"]).assign(mean_pct_of_baseline=weekly["mean_pct_of_baseline"] * 100),
        hide_index=True,
        width="stretch",
        column_config={
            "mean_steps": st.column_config.NumberColumn("mean steps", format="%.0f"),
            "mean_pct_of_baseline": st.column_config.NumberColumn("% of baseline", format="%.0f%%"),
        },
    )


def daily_chart(daily: pd.DataFrame) -> alt.Chart:
    """Daily steps of one user as a line, their baseline as a dashed line."""
    long = daily.rename(columns={"baseline_steps": "baseline"}).melt(
        id_vars="activity_date", value_vars=["steps", "baseline"], var_name="series"
    )
    chart: alt.Chart = (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("activity_date:T", title="Day"),
            y=alt.Y("value:Q", title="Steps"),
            color=alt.Color(
                "series:N",
                title=None,
                scale=alt.Scale(domain=["steps", "baseline"], range=["#1565c0", "#757575"]),
            ),
            strokeDash=alt.StrokeDash(
                "series:N",
                scale=alt.Scale(domain=["steps", "baseline"], range=[[1, 0], [6, 4]]),
                legend=None,
            ),
        )
    )
    return chart


def render_last_run(url: str) -> None:
    try:
        run = fetch(url, "last_run")
    except (MartsMissingError, NoAccessError):  # a read-only role may see the marts only
        return
    if run.empty:
        return
    last = run.iloc[0]
    st.caption(
        f"Last pipeline run finished {last['finished_at']:%Y-%m-%d %H:%M %Z}: {last['status']}, "
        f"{last['files_loaded']} file(s) loaded, dbt {last['dbt_status'] or 'not run'}."
    )


def render(url: str) -> None:
    try:
        cohort = fetch(url, "cohort")
        trends = fetch(url, "trends")
    except NoAccessError as exc:
        st.error(f"This database role may not read the marts ({exc}): see docs/deploy.md, grants.")
        return
    except MartsMissingError as exc:
        st.info(f"The marts are not built yet ({exc}). Drop files in the data lake and let the pipeline run.")
        return
    render_headline(headline(cohort, trends))
    left, right = st.columns([3, 2])
    with left:
        render_cohort_trend(cohort)
    with right:
        render_trend_shares(trends)
    render_daily_view(url, trends)
    volume, quality = st.columns([3, 2])
    with volume:
        render_volume(url)
    with quality:
        render_quality(url)
    render_drilldown(url, trends)
    render_last_run(url)


def main() -> None:
    st.set_page_config(page_title="Wearable engagement", layout="wide")
    st.title("Wearable engagement")
    try:
        url = database_url()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        return
    if url is None:
        st.error("Set DATABASE_URL (or DB_HOST and friends) to the pipeline's database.")
        return
    try:
        render(url)
    except psycopg.OperationalError:
        st.error(f"Cannot reach the database at {redact_conninfo(url)}.")


if __name__ == "__main__":
    main()
