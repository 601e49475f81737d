{{
    config(
        materialized='incremental',
        incremental_strategy='replace_users',
        unique_key=['user_id', 'week_number'],
        indexes=[
            {'columns': ['user_id', 'week_number'], 'unique': true},
            {'columns': ['built_at']},
        ],
    )
}}
-- depends_on: {{ ref('int_user_source_fingerprints') }}
-- One row per user per week since his first active day (week 0 starts that day), for the weeks
-- with at least one observed complete day. Means are over observed days: a day without steps
-- (tracker not worn) counts as 0 steps and 0 % of baseline, which is the disengagement we want to
-- see; a partial day (the day an export was taken, not is_complete_day) is left out.
{%- set user_ids = changed_user_ids() if is_incremental() else none %}

with days as (

    select user_id, activity_date, steps, is_active_day, week_number
    from {{ ref('user_activity_deviation') }}
    where week_number is not null
      and is_complete_day
    {% if user_ids is not none -%} and {{ user_id_in(user_ids) }} {%- endif %}

),

baselines as (

    select user_id, first_active_date, baseline_steps
    from {{ ref('user_baseline_activity') }}
    {% if user_ids is not none -%} where {{ user_id_in(user_ids) }} {%- endif %}

),

weeks as (

    select
        user_id,
        week_number,
        count(*)                               as observed_days,
        count(*) filter (where is_active_day)  as active_days,
        sum(steps)                             as total_steps,
        avg(steps)                             as mean_steps
    from days
    group by user_id, week_number

)

select
    weeks.user_id,
    weeks.week_number,
    baselines.first_active_date + 7 * weeks.week_number       as week_start,
    baselines.first_active_date + 7 * weeks.week_number + 6   as week_end,
    weeks.observed_days,
    weeks.active_days,
    weeks.total_steps,
    weeks.mean_steps::double precision                         as mean_steps,
    -- avg(steps) / baseline equals avg(steps / baseline) but does not depend on row order
    (weeks.mean_steps / nullif(baselines.baseline_steps, 0)::numeric)::double precision
                                                               as mean_pct_of_baseline,
    now()                                                      as built_at
from weeks
inner join baselines using (user_id)
