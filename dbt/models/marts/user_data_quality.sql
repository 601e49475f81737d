{{
    config(
        materialized='incremental',
        incremental_strategy='replace_users',
        unique_key=['user_id', 'raw_table'],
        indexes=[
            {'columns': ['user_id', 'raw_table'], 'unique': true},
            {'columns': ['built_at']},
        ],
    )
}}
-- depends_on: {{ ref('int_user_source_fingerprints') }}
-- One row per user and raw table: what became of his raw rows. Each raw row of a user-day is the
-- kept one (the newest export's), or was left out as an exact duplicate of it (the same values,
-- whatever the file), as superseded (other values, from another load: an older export or an
-- earlier load), or as conflicting (other values in the kept row's own file; its later line won).
-- partial_days counts his days left out of the answer as partial (not is_complete_day).
{%- set user_ids = changed_user_ids() if is_incremental() else none %}
{%- set activity_values = [
        'steps', 'distance_km', 'tracker_distance_km', 'logged_activities_distance_km',
        'very_active_distance_km', 'moderately_active_distance_km', 'light_active_distance_km',
        'sedentary_active_distance_km', 'very_active_minutes', 'fairly_active_minutes',
        'lightly_active_minutes', 'sedentary_minutes', 'calories'] %}
{%- set sleep_values = ['sleep_records', 'minutes_asleep', 'minutes_in_bed'] %}

with activity as (

    select
        raw.user_id,
        raw.load_id = kept.load_id
            and raw.source_line_number = kept.source_line_number  as is_kept,
        raw.load_id = kept.load_id                                 as same_load,
        {{ same_values('raw', 'kept', activity_values) }}                         as same_values
    from {{ ref('stg_daily_activity') }} as raw
    inner join {{ ref('int_daily_activity_deduplicated') }} as kept
        on kept.user_id = raw.user_id
       and kept.activity_date = raw.activity_date
    {% if user_ids is not none -%}
    where {{ user_id_in(user_ids, 'raw.user_id') }} and {{ user_id_in(user_ids, 'kept.user_id') }}
    {%- endif %}

),

sleep as (

    select
        raw.user_id,
        raw.load_id = kept.load_id
            and raw.source_line_number = kept.source_line_number  as is_kept,
        raw.load_id = kept.load_id                                 as same_load,
        {{ same_values('raw', 'kept', sleep_values) }}                            as same_values
    from {{ ref('stg_sleep') }} as raw
    inner join {{ ref('int_sleep_deduplicated') }} as kept
        on kept.user_id = raw.user_id
       and kept.sleep_date = raw.sleep_date
    {% if user_ids is not none -%}
    where {{ user_id_in(user_ids, 'raw.user_id') }} and {{ user_id_in(user_ids, 'kept.user_id') }}
    {%- endif %}

),

partial_days as (

    select user_id, count(*) filter (where not is_complete_day) as partial_days
    from {{ ref('user_daily_activity') }}
    {% if user_ids is not none -%} where {{ user_id_in(user_ids) }} {%- endif %}
    group by user_id

),

classified as (

    select 'daily_activity'::text as raw_table, * from activity
    union all
    select 'sleep'::text as raw_table, * from sleep

)

select
    classified.user_id,
    classified.raw_table,
    count(*)                                                               as raw_rows,
    count(*) filter (where is_kept)                                        as kept_rows,
    count(*) filter (where not is_kept and same_values)                    as duplicate_rows,
    count(*) filter (where not is_kept and not same_values and not same_load)
                                                                           as superseded_rows,
    count(*) filter (where not is_kept and not same_values and same_load)  as conflicting_rows,
    case when classified.raw_table = 'daily_activity'
        then coalesce(max(partial_days.partial_days), 0)
    end                                                                    as partial_days,
    now()                                                                  as built_at
from classified
left join partial_days
    on partial_days.user_id = classified.user_id
   and classified.raw_table = 'daily_activity'
group by classified.user_id, classified.raw_table
