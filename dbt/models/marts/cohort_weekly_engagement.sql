-- One row per week since first active day, across all users observed in that week: the cohort's
-- answer to "is engagement holding up?". Small (one row per week), rebuilt in full each time.
with weeks as (

    select
        weekly.user_id,
        weekly.week_number,
        weekly.active_days,
        weekly.mean_steps,
        weekly.mean_pct_of_baseline,
        trend.trend_class
    from {{ ref('user_weekly_engagement') }} as weekly
    inner join {{ ref('user_engagement_trend') }} as trend using (user_id)

)

select
    week_number,
    count(*)                                                        as users_observed,
    count(*) filter (where active_days > 0)                         as users_active,
    avg(active_days)::double precision                              as mean_active_days,
    -- numeric sums do not depend on row order: a full refresh and an incremental build agree
    avg(mean_steps::numeric)::double precision                      as mean_steps,
    avg(mean_pct_of_baseline::numeric)::double precision            as mean_pct_of_baseline,
    percentile_cont(0.5) within group (order by mean_pct_of_baseline)
                                                                    as median_pct_of_baseline,
    avg((trend_class = 'consistent')::int)::double precision        as share_consistent,
    avg((trend_class = 'degrading')::int)::double precision         as share_degrading,
    avg((trend_class = 'improving')::int)::double precision         as share_improving,
    avg((trend_class = 'insufficient_data')::int)::double precision as share_insufficient_data,
    now()                                                           as built_at
from weeks
group by week_number
