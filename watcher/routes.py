"""File name → raw table, and each table's column contract.

A route matches when every one of its keywords occurs in the file name (case-insensitive). To
load a new kind of export, add a ``Route`` to ``ROUTES`` and a migration creating its table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class ColumnType(Enum):
    BIGINT = "bigint"
    INTEGER = "integer"
    DOUBLE = "double precision"
    DATE = "date"


@dataclass(frozen=True)
class Column:
    name: str
    """Column name in the raw table."""
    header: str
    """Header as the Fitbit export spells it; matching ignores case, spaces and underscores."""
    type: ColumnType
    required: bool = True


@dataclass(frozen=True)
class Route:
    table: str
    """Raw table name, in schema ``raw``."""
    keywords: tuple[str, ...]
    columns: tuple[Column, ...]
    error_budget_fraction: float | None = None
    error_budget_rows: int | None = None

    @property
    def qualified_table(self) -> tuple[str, str]:
        return ("raw", self.table)

    @property
    def sequence(self) -> tuple[str, str]:
        return ("raw", f"{self.table}_line_seq")

    def matches(self, file_name: str) -> bool:
        lowered = file_name.lower()
        return all(k in lowered for k in self.keywords)

    @property
    def required_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.required)


def _col(name: str, header: str, type_: ColumnType, required: bool = True) -> Column:
    return Column(name, header, type_, required)


BIG, INT, DBL, DAY = ColumnType.BIGINT, ColumnType.INTEGER, ColumnType.DOUBLE, ColumnType.DATE

DAILY_ACTIVITY = Route(
    table="daily_activity",
    keywords=("daily", "activity"),
    columns=(
        _col("id", "Id", BIG),
        _col("activity_date", "ActivityDate", DAY),
        _col("total_steps", "TotalSteps", INT),
        _col("total_distance", "TotalDistance", DBL, False),
        _col("tracker_distance", "TrackerDistance", DBL, False),
        _col("logged_activities_distance", "LoggedActivitiesDistance", DBL, False),
        _col("very_active_distance", "VeryActiveDistance", DBL, False),
        _col("moderately_active_distance", "ModeratelyActiveDistance", DBL, False),
        _col("light_active_distance", "LightActiveDistance", DBL, False),
        _col("sedentary_active_distance", "SedentaryActiveDistance", DBL, False),
        _col("very_active_minutes", "VeryActiveMinutes", INT, False),
        _col("fairly_active_minutes", "FairlyActiveMinutes", INT, False),
        _col("lightly_active_minutes", "LightlyActiveMinutes", INT, False),
        _col("sedentary_minutes", "SedentaryMinutes", INT, False),
        _col("calories", "Calories", INT, False),
    ),
)

SLEEP = Route(
    table="sleep",
    keywords=("sleep",),
    columns=(
        _col("id", "Id", BIG),
        _col("sleep_day", "SleepDay", DAY),
        _col("total_sleep_records", "TotalSleepRecords", INT, False),
        _col("total_minutes_asleep", "TotalMinutesAsleep", INT),
        _col("total_time_in_bed", "TotalTimeInBed", INT, False),
    ),
)

ROUTES: tuple[Route, ...] = (DAILY_ACTIVITY, SLEEP)


def route_for(file_name: str, routes: tuple[Route, ...] = ROUTES) -> Route | None:
    """The first route whose keywords all occur in the name, or None."""
    return next((r for r in routes if r.matches(file_name)), None)


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize_header(name: str) -> str:
    """Header cell → matching key: BOM, case, spaces, underscores and punctuation do not matter."""
    return _NOT_ALNUM.sub("", name.replace("\ufeff", "").lower())


@dataclass(frozen=True)
class HeaderMapping:
    """How the file's header lines up with the route's columns."""

    file_columns: tuple[Column | None, ...]
    """One entry per header cell: its column, or None for an extra column to drop."""
    missing_required: tuple[str, ...]
    missing_optional: tuple[str, ...]
    extra_headers: tuple[str, ...]
    duplicate_headers: tuple[str, ...]

    @property
    def loadable(self) -> bool:
        return not self.missing_required and not self.duplicate_headers

    @property
    def needs_projection(self) -> bool:
        """True when some header cells must be dropped before COPY (extra or repeated columns)."""
        return any(c is None for c in self.file_columns)

    @property
    def copy_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.file_columns if c is not None)


def map_header(cells: list[str], route: Route) -> HeaderMapping:
    by_key = {normalize_header(c.header): c for c in route.columns}
    by_key.update({normalize_header(c.name): c for c in route.columns})
    seen: dict[str, str] = {}
    file_columns: list[Column | None] = []
    extra: list[str] = []
    dupes: list[str] = []
    for cell in cells:
        column = by_key.get(normalize_header(cell))
        if column is None:
            extra.append(cell.strip())
            file_columns.append(None)
        elif column.name in seen:
            dupes.append(cell.strip())
            file_columns.append(None)
        else:
            seen[column.name] = cell
            file_columns.append(column)
    missing_req = tuple(c.header for c in route.columns if c.required and c.name not in seen)
    missing_opt = tuple(c.header for c in route.columns if not c.required and c.name not in seen)
    return HeaderMapping(tuple(file_columns), missing_req, missing_opt, tuple(extra), tuple(dupes))
