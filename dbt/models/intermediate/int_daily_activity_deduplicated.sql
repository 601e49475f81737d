-- One row per user and day: when several loaded files carry the same user and day, the newest
-- export wins, i.e. the row of the file whose latest date is greatest, then of the later load
-- (then the later line of that file). Exact duplicate rows collapse into one.
-- The latest date of each file comes from int_load_extents (loads never change after they
-- commit). A row of a load missing there (every load has an ops.file_loads row, so none should
-- be) ranks last rather than vanish.
with ranked as (

    select
        activity.*,
        load_extents.load_latest_date,
        count(*) over same_day as source_rows,
        row_number() over (
            same_day
            order by
                load_extents.load_latest_date desc nulls last,
                activity.load_id desc,
                activity.source_line_number desc
        ) as preference
    from {{ ref('stg_daily_activity') }} as activity
    left join {{ ref('int_load_extents') }} as load_extents
        on load_extents.load_id = activity.load_id
       and load_extents.raw_table = 'daily_activity'
    where activity.user_id is not null
      and activity.activity_date is not null
    window same_day as (partition by activity.user_id, activity.activity_date)

)

select
    user_id,
    activity_date,
    steps,
    distance_km,
    tracker_distance_km,
    logged_activities_distance_km,
    very_active_distance_km,
    moderately_active_distance_km,
    light_active_distance_km,
    sedentary_active_distance_km,
    very_active_minutes,
    fairly_active_minutes,
    lightly_active_minutes,
    sedentary_minutes,
    calories,
    source_rows,
    load_id,
    load_latest_date,
    source_path,
    source_line_number
from ranked
where preference = 1
