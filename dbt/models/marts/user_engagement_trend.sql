{{
    config(
        materialized='incremental',
        incremental_strategy='replace_users',
        unique_key='user_id',
        indexes=[{'columns': ['user_id'], 'unique': true}],
    )
}}
-- depends_on: {{ ref('int_user_source_fingerprints') }}
-- One row per user: is he keeping up his activity, or is his engagement degrading?
-- The rule (see _marts__models.yml): compare his mean percent of baseline per observed day in the
-- first two weeks after his first active day with that of his last two observed weeks. Only
-- complete days count: last_observed_date is his last complete day, partial days are left out.
{%- set window_days = var('trend_window_days') %}
{%- set user_ids = changed_user_ids() if is_incremental() else none %}

with baselines as (

    select
        user_id,
        first_active_date,
        last_observed_date,
        baseline_days,
        has_full_baseline,
        baseline_steps
    from {{ ref('user_baseline_activity') }}
    {% if user_ids is not none -%} where {{ user_id_in(user_ids) }} {%- endif %}

),

days as (

    select user_id, activity_date, steps
    from {{ ref('user_activity_deviation') }}
    where week_number is not null
      and is_complete_day
    {% if user_ids is not none -%} and {{ user_id_in(user_ids) }} {%- endif %}

),

windows as (

    select
        baselines.user_id,
        baselines.last_observed_date - baselines.first_active_date + 1 as observed_span_days,
        avg(days.steps) filter (
            where days.activity_date < baselines.first_active_date + {{ window_days }}
        ) as early_mean_steps,
        avg(days.steps) filter (
            where days.activity_date > baselines.last_observed_date - {{ window_days }}
        ) as late_mean_steps,
        count(*) filter (
            where days.activity_date > baselines.last_observed_date - {{ window_days }}
              and days.steps > 0
        ) as late_active_days
    from baselines
    left join days using (user_id)
    group by baselines.user_id, baselines.first_active_date, baselines.last_observed_date

),

measures as (

    select
        baselines.user_id,
        baselines.first_active_date,
        baselines.last_observed_date,
        coalesce(windows.observed_span_days, 0)                         as observed_span_days,
        baselines.baseline_days,
        baselines.baseline_steps,
        windows.late_active_days,
        windows.early_mean_steps / nullif(baselines.baseline_steps, 0)::numeric
                                                                        as early_pct_of_baseline,
        windows.late_mean_steps / nullif(baselines.baseline_steps, 0)::numeric
                                                                        as late_pct_of_baseline,
        windows.late_mean_steps / nullif(windows.early_mean_steps, 0)   as trend_ratio,
        baselines.has_full_baseline
    from baselines
    left join windows using (user_id)

)

select
    user_id,
    first_active_date,
    last_observed_date,
    observed_span_days,
    baseline_days,
    baseline_steps,
    early_pct_of_baseline::double precision  as early_pct_of_baseline,
    late_pct_of_baseline::double precision   as late_pct_of_baseline,
    late_active_days,
    trend_ratio::double precision            as trend_ratio,
    case
        when not has_full_baseline
          or baseline_steps is null
          or observed_span_days < {{ var('trend_min_span_days') }}
          or trend_ratio is null
            then 'insufficient_data'
        when trend_ratio < {{ var('trend_degrading_below') }} then 'degrading'
        when trend_ratio > {{ var('trend_improving_above') }} then 'improving'
        else 'consistent'
    end                                      as trend_class,
    now()                                    as built_at
from measures
