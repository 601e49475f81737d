"""A deterministic generator of Fitbit-style exports, for demos, tests and benchmarks.

The files look like the public Fitbit export (Furberg et al., 2016) byte for byte in form: the
same file names and headers, CRLF line ends, no BOM, no quoting, unpadded ``M/D/YYYY`` dates,
10-digit ids and distances carrying float32 noise (``7.1100001335144``). The days are split into
two export folders named by period (``2016-03-12_2016-04-10/``), as the real export is.

Every user follows one activity profile, so that the marts have something to find. With the
dbt trend rule (the last 14 days against the first 14, degrading below 0.8, improving above 1.2,
at least 14 active days for a baseline) each profile lands in one trend class:

* ``steady``     - wears the tracker, steps vary around a personal level: ``consistent``;
* ``declining``  - steady for two weeks, then steps fall to about a third: ``degrading``;
* ``recovering`` - a dip to half the usual level in the first two weeks (an injury), then back
  to it within a week: ``improving``;
* ``sparse``     - wears the tracker on about one day in five and on fewer than 14 days in all
  (non-worn days hold 0 steps and 1440 sedentary minutes, as in the real export):
  ``insufficient_data``.

The output depends only on the arguments: the same seed gives the same bytes.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

Profile = Literal["steady", "declining", "recovering", "sparse"]
PROFILES: tuple[Profile, ...] = ("steady", "declining", "recovering", "sparse")

ACTIVITY_FILE = "dailyActivity_merged.csv"
SLEEP_FILE = "sleepDay_merged.csv"
ACTIVITY_HEADER = (
    "Id,ActivityDate,TotalSteps,TotalDistance,TrackerDistance,LoggedActivitiesDistance,"
    "VeryActiveDistance,ModeratelyActiveDistance,LightActiveDistance,SedentaryActiveDistance,"
    "VeryActiveMinutes,FairlyActiveMinutes,LightlyActiveMinutes,SedentaryMinutes,Calories"
)
SLEEP_HEADER = "Id,SleepDay,TotalSleepRecords,TotalMinutesAsleep,TotalTimeInBed"
EOL = "\r\n"
MINUTES_PER_DAY = 1440
BASELINE_DAYS = 14
RECOVERY_DIP_START = 3
SPARSE_WEAR_PROBABILITY = 0.2
FORGOT_PROBABILITY = 0.04


@dataclass(frozen=True)
class UserPlan:
    """Who a generated user is: the id in the files and the profile their days follow."""

    user_id: int
    profile: Profile
    base_steps: int
    km_per_step: float
    bmr_calories: int
    sleeps: bool


@dataclass(frozen=True)
class ActivityDay:
    user_id: int
    day: date
    steps: int
    distance_km: float
    very_km: float
    moderate_km: float
    light_km: float
    sedentary_km: float
    very_min: int
    fairly_min: int
    lightly_min: int
    sedentary_min: int
    calories: int


@dataclass(frozen=True)
class SleepDay:
    user_id: int
    day: date
    records: int
    minutes_asleep: int
    time_in_bed: int


def plan_users(users: int, seed: int) -> list[UserPlan]:
    """The users of a data set, in id order; profiles cycle so every one is present from 4 users."""
    rng = random.Random(f"wearable-sample-users:{seed}")
    ids = sorted(rng.sample(range(1_000_000_000, 10_000_000_000), users))
    profiles = [PROFILES[i % len(PROFILES)] for i in range(users)]
    rng.shuffle(profiles)
    return [
        UserPlan(
            user_id=user_id,
            profile=profile,
            base_steps=rng.randrange(6_500, 12_500, 10),
            km_per_step=rng.uniform(0.00062, 0.00078),
            bmr_calories=rng.randrange(1_300, 1_900),
            sleeps=rng.random() < 0.75,
        )
        for user_id, profile in zip(ids, profiles, strict=True)
    ]


def trend_factor(profile: Profile, index: int, days: int) -> float:
    """The share of the usual level a user walks on day ``index`` (0-based) of ``days``."""
    if profile == "declining" and index >= BASELINE_DAYS:
        progress = (index - BASELINE_DAYS) / max(1, days - BASELINE_DAYS - 1)
        return 1.0 - 0.65 * progress
    if profile == "recovering":
        # a dip soon after the start (an injury, a cold), then back to the usual level in a week
        if RECOVERY_DIP_START <= index < BASELINE_DAYS:
            return 0.5
        if BASELINE_DAYS <= index < BASELINE_DAYS + 7:
            return 0.5 + 0.5 * (index - BASELINE_DAYS + 1) / 7
    return 1.0


def is_worn(plan: UserPlan, index: int, worn_so_far: int, rng: random.Random) -> bool:
    """Whether the tracker is worn on day ``index``.

    A sparse user never wears it long enough for a baseline; the others wear it every day of
    the first two weeks (a new tracker), then forget it now and then.
    """
    draw = rng.random()
    if plan.profile == "sparse":
        return draw < SPARSE_WEAR_PROBABILITY and worn_so_far < BASELINE_DAYS - 1
    return index < BASELINE_DAYS or draw >= FORGOT_PROBABILITY


def activity_day(plan: UserPlan, day: date, factor: float, worn: bool, rng: random.Random) -> ActivityDay:
    """One day of one user; a day without the tracker is all zeros and 1440 sedentary minutes."""
    if not worn:
        return ActivityDay(
            plan.user_id,
            day,
            0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0,
            0,
            0,
            MINUTES_PER_DAY,
            plan.bmr_calories,
        )
    weekend = 0.88 if day.weekday() >= 5 else 1.0
    steps = max(150, round(plan.base_steps * factor * weekend * rng.gauss(1.0, 0.13)))
    intensity = steps / 10_000
    very_min = round(intensity * rng.uniform(8, 40))
    fairly_min = round(intensity * rng.uniform(4, 18))
    lightly_min = min(420, round(70 + intensity * rng.uniform(110, 230)))
    awake_min = rng.randrange(900, MINUTES_PER_DAY + 1)
    sedentary_min = max(0, awake_min - very_min - fairly_min - lightly_min)
    distance = round(steps * plan.km_per_step, 2)
    very_km = min(distance, round(very_min * rng.uniform(0.08, 0.13), 2))
    moderate_km = min(distance - very_km, round(fairly_min * rng.uniform(0.04, 0.07), 2))
    sedentary_km = 0.01 if rng.random() < 0.05 else 0.0
    light_km = max(0.0, round(distance - very_km - moderate_km - sedentary_km, 2))
    calories = round(plan.bmr_calories + steps * rng.uniform(0.035, 0.05) + very_min * 6 + fairly_min * 3)
    return ActivityDay(
        plan.user_id,
        day,
        steps,
        distance,
        very_km,
        moderate_km,
        light_km,
        sedentary_km,
        very_min,
        fairly_min,
        lightly_min,
        sedentary_min,
        calories,
    )


def sleep_day(plan: UserPlan, day: date, rng: random.Random) -> SleepDay | None:
    """A night of sleep for the day, or None (not every night is recorded)."""
    if not plan.sleeps or rng.random() < 0.25:
        return None
    records = 2 if rng.random() < 0.1 else 1
    asleep = max(60, round(rng.gauss(420, 60)))
    return SleepDay(plan.user_id, day, records, asleep, asleep + rng.randrange(5, 60))


def user_days(plan: UserPlan, start: date, days: int, seed: int) -> tuple[list[ActivityDay], list[SleepDay]]:
    """All days of one user; each user has their own stream of random numbers."""
    rng = random.Random(f"wearable-sample-days:{seed}:{plan.user_id}")
    activity: list[ActivityDay] = []
    sleep: list[SleepDay] = []
    worn_days = 0
    for index in range(days):
        day = start + timedelta(days=index)
        worn = is_worn(plan, index, worn_days, rng)
        worn_days += worn
        row = activity_day(plan, day, trend_factor(plan.profile, index, days), worn, rng)
        activity.append(row)
        night = sleep_day(plan, day, rng) if row.steps > 0 else None
        if night is not None:
            sleep.append(night)
    return activity, sleep


def fitbit_float(value: float) -> str:
    """A distance as the export prints it: rounded to float32, then 15 significant digits."""
    (single,) = struct.unpack("<f", struct.pack("<f", value))
    return f"{single:.15g}"


def fitbit_date(day: date) -> str:
    return f"{day.month}/{day.day}/{day.year}"


def activity_line(row: ActivityDay) -> str:
    distances = (
        row.distance_km,
        row.distance_km,
        0.0,
        row.very_km,
        row.moderate_km,
        row.light_km,
        row.sedentary_km,
    )
    fields = [str(row.user_id), fitbit_date(row.day), str(row.steps)]
    fields += [fitbit_float(d) for d in distances]
    fields += [
        str(v) for v in (row.very_min, row.fairly_min, row.lightly_min, row.sedentary_min, row.calories)
    ]
    return ",".join(fields)


def sleep_line(row: SleepDay) -> str:
    return ",".join(
        (
            str(row.user_id),
            f"{fitbit_date(row.day)} 12:00:00 AM",
            str(row.records),
            str(row.minutes_asleep),
            str(row.time_in_bed),
        )
    )


def periods(start: date, days: int) -> list[tuple[date, date]]:
    """Two export periods (first and last day, inclusive) covering the days; one if days < 2."""
    if days < 2:
        return [(start, start)]
    first_len = (days + 1) // 2
    middle = start + timedelta(days=first_len)
    return [(start, middle - timedelta(days=1)), (middle, start + timedelta(days=days - 1))]


def write_csv(path: Path, header: str, lines: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = EOL.join([header, *lines]) + EOL
    path.write_bytes(body.encode("ascii"))
    return path


def _in_period(day: date, period: tuple[date, date]) -> bool:
    return period[0] <= day <= period[1]


def write_period(
    out_dir: Path,
    period: tuple[date, date],
    activity: Sequence[ActivityDay],
    sleep: Sequence[SleepDay],
) -> list[Path]:
    folder = out_dir / f"{period[0].isoformat()}_{period[1].isoformat()}"
    return [
        write_csv(
            folder / ACTIVITY_FILE,
            ACTIVITY_HEADER,
            (activity_line(r) for r in activity if _in_period(r.day, period)),
        ),
        write_csv(
            folder / SLEEP_FILE,
            SLEEP_HEADER,
            (sleep_line(r) for r in sleep if _in_period(r.day, period)),
        ),
    ]


def generate(
    out_dir: Path,
    *,
    users: int = 12,
    days: int = 60,
    seed: int = 7,
    start: date = date(2016, 3, 12),
) -> list[Path]:
    """Write the export folders under ``out_dir`` and return the files written, in order."""
    if users < 1 or days < 1:
        raise ValueError("users and days must be at least 1")
    if users > 100_000:
        raise ValueError("at most 100000 users")
    activity: list[ActivityDay] = []
    sleep: list[SleepDay] = []
    for plan in plan_users(users, seed):
        user_activity, user_sleep = user_days(plan, start, days, seed)
        activity += user_activity
        sleep += user_sleep
    written: list[Path] = []
    for period in periods(start, days):
        written += write_period(out_dir, period, activity, sleep)
    return written
