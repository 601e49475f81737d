-- One row per line of a daily activity file, renamed and cast; nothing is filtered or merged here.
-- The file's path, sha256 and load time are those of the row's load (ops.file_loads); a query
-- that does not use them does not join (PostgreSQL removes the unused left join on its key).
-- source_line_number stays a bigint, the type incremental models built before have stored.
with source as (

    select * from {{ source('raw', 'daily_activity') }}

),

loads as (

    select * from {{ source('ops', 'file_loads') }}

)

select
    source.id::bigint                                  as user_id,
    source.activity_date::date                         as activity_date,
    source.total_steps::integer                        as steps,
    source.total_distance::double precision            as distance_km,
    source.tracker_distance::double precision          as tracker_distance_km,
    source.logged_activities_distance::double precision as logged_activities_distance_km,
    source.very_active_distance::double precision      as very_active_distance_km,
    source.moderately_active_distance::double precision as moderately_active_distance_km,
    source.light_active_distance::double precision     as light_active_distance_km,
    source.sedentary_active_distance::double precision as sedentary_active_distance_km,
    source.very_active_minutes::integer                as very_active_minutes,
    source.fairly_active_minutes::integer              as fairly_active_minutes,
    source.lightly_active_minutes::integer             as lightly_active_minutes,
    source.sedentary_minutes::integer                  as sedentary_minutes,
    source.calories::integer                           as calories,
    source._line_number::bigint                        as source_line_number,
    source._load_id                                    as load_id,
    loads.source_path                                  as source_path,
    loads.source_sha256                                as source_sha256,
    loads.finished_at                                  as loaded_at
from source
left join loads on loads.load_id = source._load_id
