-- One row per calendar date from the first to the last day in user_daily_activity: how many
-- user-days arrived for that date against the mean of the 7 dates before it (a date without rows
-- counts as 0). A deviation above volume_anomaly_threshold (var, 0.30), either way, is flagged:
-- a missing or doubled drop shows here before it shows in the answer. The first 7 dates have no
-- full trailing window and are never flagged. Small (one row per date), rebuilt in full each time.
with counts as (

    select activity_date, count(*) as row_count
    from {{ ref('user_daily_activity') }}
    group by activity_date

),

calendar as (

    select generate_series(min(activity_date), max(activity_date), interval '1 day')::date
        as activity_date
    from counts

),

series as (

    select
        calendar.activity_date,
        coalesce(counts.row_count, 0)::integer                              as row_count,
        avg(coalesce(counts.row_count, 0)::numeric) over previous_week         as trailing_mean,
        count(*) over previous_week                                             as trailing_days
    from calendar
    left join counts using (activity_date)
    window previous_week as (order by calendar.activity_date rows between 7 preceding and 1 preceding)

)

select
    activity_date,
    row_count,
    case when trailing_days = 7 then trailing_mean::double precision end   as trailing_7d_mean,
    case when trailing_days = 7 and trailing_mean > 0
        then (row_count / trailing_mean - 1)::double precision
    end                                                                     as deviation,
    coalesce(
        trailing_days = 7
        and (trailing_mean = 0 and row_count > 0
             or trailing_mean > 0
                and abs(row_count / trailing_mean - 1) > {{ var('volume_anomaly_threshold') }}),
        false
    )                                                                       as is_anomaly,
    now()                                                                   as built_at
from series
