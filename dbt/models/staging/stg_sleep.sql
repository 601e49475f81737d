-- One row per line of a daily sleep file, renamed and cast; nothing is filtered or merged here.
with source as (

    select * from {{ source('raw', 'sleep') }}

)

select
    id::bigint                      as user_id,
    sleep_day::date                 as sleep_date,
    total_sleep_records::integer    as sleep_records,
    total_minutes_asleep::integer   as minutes_asleep,
    total_time_in_bed::integer      as minutes_in_bed,
    _source_path                    as source_path,
    _line_number                    as source_line_number,
    _load_id                        as load_id,
    _loaded_at                      as loaded_at
from source
