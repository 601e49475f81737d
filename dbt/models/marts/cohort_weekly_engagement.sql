-- One row per week since first active day, across all users observed in that week: the cohort's
-- answer to "is engagement holding up?". Small (one row per week), rebuilt in full each time.
-- A week is reliable, and may be headlined, when at least the larger of cohort_min_users and
-- cohort_min_share x the cohort (the users with any week) observed it.
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

),

reliability as (

    select greatest(
        {{ var('cohort_min_users') }}::numeric,
        {{ var('cohort_min_share') }}::numeric * count(distinct user_id)
    ) as min_users
    from weeks

),

cohort as (

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
        percentile_cont(0.25) within group (order by mean_pct_of_baseline)
                                                                        as p25_pct_of_baseline,
        percentile_cont(0.75) within group (order by mean_pct_of_baseline)
                                                                        as p75_pct_of_baseline,
        avg((trend_class = 'consistent')::int)::double precision        as share_consistent,
        avg((trend_class = 'degrading')::int)::double precision         as share_degrading,
        avg((trend_class = 'improving')::int)::double precision         as share_improving,
        avg((trend_class = 'insufficient_data')::int)::double precision as share_insufficient_data
    from weeks
    group by week_number

)

select
    cohort.week_number,
    cohort.users_observed,
    cohort.users_active,
    cohort.mean_active_days,
    cohort.mean_steps,
    cohort.mean_pct_of_baseline,
    cohort.median_pct_of_baseline,
    cohort.p25_pct_of_baseline,
    cohort.p75_pct_of_baseline,
    cohort.users_observed >= reliability.min_users                  as is_reliable,
    ceil(reliability.min_users)::integer                            as reliable_min_users,
    cohort.share_consistent,
    cohort.share_degrading,
    cohort.share_improving,
    cohort.share_insufficient_data,
    now()                                                           as built_at
from cohort
cross join reliability
