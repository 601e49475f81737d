{{
    config(
        materialized='incremental',
        unique_key=['raw_table', 'load_id'],
        incremental_strategy='delete+insert',
    )
}}
-- One row per load (one version of one file) with rows in a raw table: the file's latest date,
-- which decides overlapping exports (the newest export wins). A load never changes after it
-- commits, so an incremental build only reads the loads it has not seen, found through
-- ops.file_loads; loads already replaced are skipped.
-- Built after the fingerprints, on purpose: every load the fingerprints saw then has its extents,
-- and a load committed later belongs to users whom the next build finds changed.
-- depends_on: {{ ref('int_user_source_fingerprints') }}
{%- set candidate_loads_sql -%}
    select loads.load_id
    from {{ source('ops', 'file_loads') }} as loads
    where not exists (
        select 1
        from {{ source('ops', 'file_loads') }} as later
        where later.replaces_load_id = loads.load_id
    )
    {% if is_incremental() -%}
      and not exists (select 1 from {{ this }} as seen where seen.load_id = loads.load_id)
    {%- endif %}
{%- endset -%}
{#- An incremental build lists the new loads as literals, read when this model is compiled (after
    the fingerprints were built): PostgreSQL then finds their rows through the BRIN index on
    _load_id, and skips the own table of every large load but theirs (watcher/load_tables.py),
    which it cannot do for a list the query computes. A full build: a join. -#}
{%- if is_incremental() -%}
    {%- set in_candidate_loads = load_id_in(query_values(candidate_loads_sql)) -%}
{%- else -%}
    {%- set in_candidate_loads = 'load_id in (' ~ candidate_loads_sql ~ ')' -%}
{%- endif %}

with activity as (

    select
        load_id,
        'daily_activity'::text  as raw_table,
        max(activity_date)      as load_latest_date,
        count(*)                as load_rows
    from {{ ref('stg_daily_activity') }}
    where {{ in_candidate_loads }}
    group by load_id

),

sleep as (

    select
        load_id,
        'sleep'::text           as raw_table,
        max(sleep_date)         as load_latest_date,
        count(*)                as load_rows
    from {{ ref('stg_sleep') }}
    where {{ in_candidate_loads }}
    group by load_id

)

select * from activity
union all
select * from sleep
