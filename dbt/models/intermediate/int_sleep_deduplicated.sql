-- One row per user and night (sleep_date): the same rule as int_daily_activity_deduplicated.
-- The newest export wins (file with the greatest latest date, then the later load, then the later
-- line); exact duplicate rows (the real sleep file has three) collapse into one.
with sleep as (

    select *
    from {{ ref('stg_sleep') }}
    where user_id is not null
      and sleep_date is not null

),

load_extents as (

    select
        load_id,
        max(sleep_date) as load_latest_date
    from sleep
    group by load_id

),

ranked as (

    select
        sleep.*,
        load_extents.load_latest_date,
        count(*) over same_night as source_rows,
        row_number() over (
            same_night
            order by
                load_extents.load_latest_date desc,
                sleep.load_id desc,
                sleep.source_line_number desc
        ) as preference
    from sleep
    inner join load_extents using (load_id)
    window same_night as (partition by sleep.user_id, sleep.sleep_date)

)

select
    user_id,
    sleep_date,
    sleep_records,
    minutes_asleep,
    minutes_in_bed,
    source_rows,
    load_id,
    load_latest_date,
    source_path,
    source_line_number
from ranked
where preference = 1
