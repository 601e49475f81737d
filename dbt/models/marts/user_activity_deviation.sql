{{
    config(
        materialized='incremental',
        incremental_strategy='replace_users',
        unique_key=['user_id', 'activity_date'],
        indexes=[
            {'columns': ['user_id', 'activity_date'], 'unique': true},
            {'columns': ['built_at']},
        ],
    )
}}
-- depends_on: {{ ref('int_user_source_fingerprints') }}
-- One row per user per day: the day's steps against the user's baseline. A changed user gets all
-- his days rebuilt, since an earlier day arriving can move his baseline. Partial days (not
-- is_complete_day) stay visible here; the weekly, trend and cohort models leave them out.
{%- set user_ids = changed_user_ids() if is_incremental() else none %}

with days as (

    select user_id, activity_date, steps, is_active_day, is_complete_day
    from {{ ref('user_daily_activity') }}
    {% if user_ids is not none -%} where {{ user_id_in(user_ids) }} {%- endif %}

),

baselines as (

    select user_id, first_active_date, baseline_window_end_date, baseline_steps
    from {{ ref('user_baseline_activity') }}
    {% if user_ids is not none -%} where {{ user_id_in(user_ids) }} {%- endif %}

)

select
    days.user_id,
    days.activity_date,
    days.steps,
    days.is_active_day,
    days.is_complete_day,
    baselines.baseline_steps,
    days.steps / nullif(baselines.baseline_steps, 0)   as steps_pct_of_baseline,
    days.steps - baselines.baseline_steps              as steps_delta_from_baseline,
    coalesce(
        days.activity_date between baselines.first_active_date
                               and baselines.baseline_window_end_date,
        false
    )                                                  as is_baseline_window,
    days.activity_date - baselines.first_active_date   as days_since_first_active,
    case
        when days.activity_date >= baselines.first_active_date
            then (days.activity_date - baselines.first_active_date) / 7
    end                                                as week_number,
    now()                                              as built_at
from days
inner join baselines using (user_id)
