{{
    config(
        materialized='incremental',
        unique_key='user_id',
        incremental_strategy='delete+insert',
    )
}}
-- The change log that drives every incremental mart: one row per user with a fingerprint of his
-- raw rows and the time it last changed. Load ids only grow, and a changed file deletes its old
-- rows, so (row count, sum of load ids) per table changes whenever a user gains or loses a row.
-- Users whose rows all vanished keep a row of zeros, so that the marts drop them. The highest
-- load id seen also tells the data tests which loads are new (see get_where_subquery).
with activity as (

    select
        user_id,
        count(*)::bigint       as activity_rows,
        sum(load_id)::numeric  as activity_load_id_sum,
        max(load_id)           as activity_max_load_id
    from {{ ref('stg_daily_activity') }}
    where user_id is not null
    group by user_id

),

sleep as (

    select
        user_id,
        count(*)::bigint       as sleep_rows,
        sum(load_id)::numeric  as sleep_load_id_sum,
        max(load_id)           as sleep_max_load_id
    from {{ ref('stg_sleep') }}
    where user_id is not null
    group by user_id

),

current_fingerprints as (

    select
        user_id,
        coalesce(activity.activity_rows, 0)         as activity_rows,
        coalesce(activity.activity_load_id_sum, 0)  as activity_load_id_sum,
        coalesce(sleep.sleep_rows, 0)               as sleep_rows,
        coalesce(sleep.sleep_load_id_sum, 0)        as sleep_load_id_sum,
        coalesce(activity.activity_max_load_id, 0)  as activity_max_load_id,
        coalesce(sleep.sleep_max_load_id, 0)        as sleep_max_load_id
    from activity
    full outer join sleep using (user_id)

)

{% if is_incremental() %}

select
    user_id,
    coalesce(current_fingerprints.activity_rows, 0)::bigint           as activity_rows,
    coalesce(current_fingerprints.activity_load_id_sum, 0)::numeric   as activity_load_id_sum,
    coalesce(current_fingerprints.sleep_rows, 0)::bigint              as sleep_rows,
    coalesce(current_fingerprints.sleep_load_id_sum, 0)::numeric      as sleep_load_id_sum,
    coalesce(current_fingerprints.activity_max_load_id, 0)::bigint    as activity_max_load_id,
    coalesce(current_fingerprints.sleep_max_load_id, 0)::bigint       as sleep_max_load_id,
    now()                                                             as changed_at
from current_fingerprints
full outer join {{ this }} as previous using (user_id)
where (
        coalesce(current_fingerprints.activity_rows, 0),
        coalesce(current_fingerprints.activity_load_id_sum, 0),
        coalesce(current_fingerprints.sleep_rows, 0),
        coalesce(current_fingerprints.sleep_load_id_sum, 0)
    ) is distinct from (
        previous.activity_rows,
        previous.activity_load_id_sum,
        previous.sleep_rows,
        previous.sleep_load_id_sum
    )

{% else %}

select
    user_id,
    activity_rows,
    activity_load_id_sum,
    sleep_rows,
    sleep_load_id_sum,
    activity_max_load_id,
    sleep_max_load_id,
    now() as changed_at
from current_fingerprints

{% endif %}
