-- One row per user and night (sleep_date): the same rule as int_daily_activity_deduplicated.
-- The newest export wins (file with the greatest latest date, then the later load, then the later
-- line); exact duplicate rows (the real sleep file has three) collapse into one.
-- The latest date of each file comes from int_load_extents (loads never change after they
-- commit). A row of a load missing there (every load has an ops.file_loads row, so none should
-- be) ranks last rather than vanish.
with ranked as (

    select
        sleep.*,
        load_extents.load_latest_date,
        count(*) over same_night as source_rows,
        row_number() over (
            same_night
            order by
                load_extents.load_latest_date desc nulls last,
                sleep.load_id desc,
                sleep.source_line_number desc
        ) as preference
    from {{ ref('stg_sleep') }} as sleep
    left join {{ ref('int_load_extents') }} as load_extents
        on load_extents.load_id = sleep.load_id
       and load_extents.raw_table = 'sleep'
    where sleep.user_id is not null
      and sleep.sleep_date is not null
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
