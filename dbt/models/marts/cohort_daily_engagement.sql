-- One row per calendar date: the cohort by calendar day, the view of the batch version. Over every
-- user with a baseline who has a complete day that date (partial days, the days exports were
-- taken, are left out). Small (one row per date), rebuilt in full each time.
with days as (

    select activity_date, steps_pct_of_baseline
    from {{ ref('user_activity_deviation') }}
    where is_complete_day
      and steps_pct_of_baseline is not null

)

select
    activity_date,
    count(*)                                                            as users_observed,
    percentile_cont(0.5) within group (order by steps_pct_of_baseline)  as median_pct_of_baseline,
    percentile_cont(0.25) within group (order by steps_pct_of_baseline) as p25_pct_of_baseline,
    percentile_cont(0.75) within group (order by steps_pct_of_baseline) as p75_pct_of_baseline,
    avg((steps_pct_of_baseline < 0.8)::int)::double precision           as share_below_80pct,
    now()                                                               as built_at
from days
group by activity_date
