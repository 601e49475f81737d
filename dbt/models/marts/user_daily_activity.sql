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
-- One row per user per day of activity, with the night's sleep when a sleep file has it.
-- is_complete_day: the day lies before the last export_partial_days (var, 1) dates of the file its
-- row came from. The last date of an export is the day it was taken, seen only in part; a later
-- export that covers the day wins it (newest export wins), and then the day is complete. Every
-- row of a user is rebuilt when his raw rows change, so a later export turns his day complete in
-- an incremental build.
{%- set user_ids = changed_user_ids() if is_incremental() else none %}

with activity as (

    select *
    from {{ ref('int_daily_activity_deduplicated') }}
    {% if user_ids is not none -%} where {{ user_id_in(user_ids) }} {%- endif %}

),

sleep as (

    select *
    from {{ ref('int_sleep_deduplicated') }}
    {% if user_ids is not none -%} where {{ user_id_in(user_ids) }} {%- endif %}

)

select
    activity.user_id,
    activity.activity_date,
    activity.steps,
    coalesce(activity.steps > 0, false)        as is_active_day,
    coalesce(
        activity.activity_date
            <= activity.load_latest_date - {{ var('export_partial_days') }},
        false
    )                                          as is_complete_day,
    activity.distance_km,
    activity.very_active_minutes,
    activity.fairly_active_minutes,
    activity.lightly_active_minutes,
    activity.very_active_minutes
        + activity.fairly_active_minutes
        + activity.lightly_active_minutes      as active_minutes,
    activity.sedentary_minutes,
    activity.calories,
    sleep.minutes_asleep                       as sleep_minutes,
    sleep.minutes_in_bed                       as time_in_bed_minutes,
    sleep.sleep_records,
    sleep.minutes_asleep::double precision
        / nullif(sleep.minutes_in_bed, 0)      as sleep_efficiency,
    activity.source_rows                       as activity_source_rows,
    activity.load_id                           as activity_load_id,
    sleep.load_id                              as sleep_load_id,
    now()                                      as built_at
from activity
left join sleep
    on sleep.user_id = activity.user_id
   and sleep.sleep_date = activity.activity_date
