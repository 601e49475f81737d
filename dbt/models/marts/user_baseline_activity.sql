{{
    config(
        materialized='incremental',
        incremental_strategy='replace_users',
        unique_key='user_id',
        indexes=[{'columns': ['user_id'], 'unique': true}],
    )
}}
-- depends_on: {{ ref('int_user_source_fingerprints') }}
-- One row per user: his baseline, the median of steps over his first N complete active days
-- (N = 14). A user with fewer gets the median of those he has; baseline_days says how many.
-- Every date and count here is over complete days (is_complete_day): a partial day, the day an
-- export was taken, is neither a baseline day nor the end of his observed span.
{%- set user_ids = changed_user_ids() if is_incremental() else none %}

with days as (

    select user_id, activity_date, steps, is_active_day, is_complete_day
    from {{ ref('user_daily_activity') }}
    {% if user_ids is not none -%} where {{ user_id_in(user_ids) }} {%- endif %}

),

users as (

    select
        user_id,
        min(activity_date) filter (where is_complete_day) as first_observed_date,
        max(activity_date) filter (where is_complete_day) as last_observed_date,
        count(*) filter (where is_complete_day)           as observed_days,
        count(*) filter (where is_active_day and is_complete_day)
                                                          as active_days,
        min(activity_date) filter (where is_active_day and is_complete_day)
                                                          as first_active_date,
        count(*) filter (where not is_complete_day)       as incomplete_days
    from days
    group by user_id

),

active_days as (

    select
        user_id,
        activity_date,
        steps,
        row_number() over (partition by user_id order by activity_date) as active_day_number
    from days
    where is_active_day and is_complete_day

),

baseline_window as (

    select
        user_id,
        count(*)                                          as baseline_days,
        max(activity_date)                                as baseline_window_end_date,
        percentile_cont(0.5) within group (order by steps) as baseline_steps
    from active_days
    where active_day_number <= {{ var('baseline_active_days') }}
    group by user_id

)

select
    users.user_id,
    users.first_observed_date,
    users.last_observed_date,
    users.observed_days,
    users.active_days,
    users.first_active_date,
    users.incomplete_days,
    baseline_window.baseline_window_end_date,
    coalesce(baseline_window.baseline_days, 0)        as baseline_days,
    coalesce(baseline_window.baseline_days, 0)
        >= {{ var('baseline_active_days') }}          as has_full_baseline,
    baseline_window.baseline_steps,
    now()                                             as built_at
from users
left join baseline_window using (user_id)
