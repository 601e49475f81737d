"""A Streamlit page answering "is the cohort keeping up its activity?" at a glance.

It reads the dbt marts: the cohort's weekly activity against baseline, the share of users in each
trend class, and a drill-down into one user. Install the extra and run it::

    pip install '.[dashboard]'
    DATABASE_URL=postgresql://... streamlit run watcher/dashboard_app.py

The database is chosen like the pipeline's (``DATABASE_URL``, else ``DB_HOST`` and friends).
The marts keep "pct of baseline" as a ratio (1.0 = the user's own baseline) and shares as
fractions; the page shows both as percentages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import altair as alt
import pandas as pd
import psycopg
import streamlit as st
from psycopg import sql

from watcher.config import ConfigError, Overrides, build_settings, redact_conninfo

TREND_CLASSES = ("consistent", "degrading", "improving", "insufficient_data")
TREND_COLORS = ("#2e7d32", "#c62828", "#1565c0", "#9e9e9e")
BASELINE = 1.0  # a ratio of the user's own baseline
CACHE_SECONDS = 60

QUERIES: dict[str, sql.SQL] = {
    "cohort": sql.SQL(
        "SELECT week_number, users_active, mean_pct_of_baseline, share_degrading "
        "FROM marts.cohort_weekly_engagement ORDER BY week_number"
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
    users: int
    latest_week: int | None
    latest_pct_of_baseline: float | None
    latest_share_degrading: float | None
    users_active: int | None


def database_url() -> str | None:
    """The pipeline's own database setting (watcher.config is the only reader of the environment)."""
    return build_settings(Overrides()).database_url


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def fetch(url: str, query: str, user_id: int | None = None) -> pd.DataFrame:
    """One of QUERIES as a data frame; MartsMissingError when its schema or table is absent."""
    params: dict[str, Any] = {"user_id": user_id}
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            cur = conn.execute(QUERIES[query], params)
            columns = [d.name for d in cur.description or ()]
            return pd.DataFrame(cur.fetchall(), columns=columns)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise MartsMissingError(str(exc).splitlines()[0]) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise NoAccessError(str(exc).splitlines()[0]) from exc


def trend_shares(trends: pd.DataFrame) -> pd.DataFrame:
    """Users and share of users in each trend class, every class present, in a fixed order."""
    counts = trends["trend_class"].value_counts().reindex(list(TREND_CLASSES), fill_value=0)
    total = int(counts.sum())
    frame = pd.DataFrame({"trend_class": list(TREND_CLASSES), "users": counts.to_numpy()})
    frame["share"] = frame["users"] / total if total else 0.0
    return frame


def headline(cohort: pd.DataFrame, trends: pd.DataFrame) -> Headline:
    if cohort.empty:
        return Headline(len(trends), None, None, None, None)
    last = cohort.sort_values("week_number").iloc[-1]
    return Headline(
        users=len(trends),
        latest_week=int(last["week_number"]),
        latest_pct_of_baseline=float(last["mean_pct_of_baseline"]),
        latest_share_degrading=float(last["share_degrading"]),
        users_active=int(last["users_active"]),
    )


def user_label(trends: pd.DataFrame, user_id: int) -> str:
    match = trends.loc[trends["user_id"] == user_id, "trend_class"]
    return f"{user_id} ({match.iloc[0]})" if not match.empty else str(user_id)


def render_headline(head: Headline) -> None:
    cols = st.columns(4)
    cols[0].metric("Users", head.users)
    if head.latest_week is None:
        cols[1].metric("Cohort activity", "n/a")
        return
    ratio = head.latest_pct_of_baseline or 0.0
    cols[1].metric(
        f"Cohort activity, week {head.latest_week}",
        f"{ratio:.0%} of baseline",
        delta=f"{100 * (ratio - BASELINE):+.0f} pts",
    )
    cols[2].metric("Users degrading", f"{(head.latest_share_degrading or 0.0):.0%}")
    cols[3].metric("Users active", head.users_active)


def render_cohort_trend(cohort: pd.DataFrame) -> None:
    st.subheader("Cohort activity against baseline")
    if cohort.empty:
        st.info("No weekly activity yet.")
        return
    base = alt.Chart(cohort).encode(x=alt.X("week_number:O", title="Week"))
    line = base.mark_line(point=True).encode(
        y=alt.Y(
            "mean_pct_of_baseline:Q",
            title="Mean % of baseline",
            scale=alt.Scale(zero=False),
            axis=alt.Axis(format="%"),
        ),
        tooltip=[
            "week_number",
            "users_active",
            alt.Tooltip("mean_pct_of_baseline:Q", format=".0%"),
            alt.Tooltip("share_degrading:Q", format=".0%"),
        ],
    )
    rule = (
        alt.Chart(pd.DataFrame({"baseline": [BASELINE]}))
        .mark_rule(strokeDash=[6, 4], color="gray")
        .encode(y="baseline:Q")
    )
    st.altair_chart(line + rule, width="stretch")
    st.caption(
        "Mean over users of their daily steps as % of their own baseline (a day without the "
        "tracker counts as 0). Week 0 starts on each user's first active day; dashed: 100%."
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
