-- One row per line of a daily activity file, renamed and cast; nothing is filtered or merged here.
with source as (

    select * from {{ source('raw', 'daily_activity') }}

)

select
    id::bigint                                  as user_id,
    activity_date::date                         as activity_date,
    total_steps::integer                        as steps,
    total_distance::double precision            as distance_km,
    tracker_distance::double precision          as tracker_distance_km,
    logged_activities_distance::double precision as logged_activities_distance_km,
    very_active_distance::double precision      as very_active_distance_km,
    moderately_active_distance::double precision as moderately_active_distance_km,
    light_active_distance::double precision     as light_active_distance_km,
    sedentary_active_distance::double precision as sedentary_active_distance_km,
    very_active_minutes::integer                as very_active_minutes,
    fairly_active_minutes::integer              as fairly_active_minutes,
    lightly_active_minutes::integer             as lightly_active_minutes,
    sedentary_minutes::integer                  as sedentary_minutes,
    calories::integer                           as calories,
    _source_path                                as source_path,
    _line_number                                as source_line_number,
    _load_id                                    as load_id,
    _loaded_at                                  as loaded_at
from source
