-- One row per line of a daily sleep file, renamed and cast; nothing is filtered or merged here.
-- The file's path, sha256 and load time are those of the row's load (ops.file_loads); a query
-- that does not use them does not join (PostgreSQL removes the unused left join on its key).
-- source_line_number stays a bigint, the type incremental models built before have stored.
with source as (

    select * from {{ source('raw', 'sleep') }}

),

loads as (

    select * from {{ source('ops', 'file_loads') }}

)

select
    source.id::bigint                      as user_id,
    source.sleep_day::date                 as sleep_date,
    source.total_sleep_records::integer    as sleep_records,
    source.total_minutes_asleep::integer   as minutes_asleep,
    source.total_time_in_bed::integer      as minutes_in_bed,
    source._line_number::bigint            as source_line_number,
    source._load_id                        as load_id,
    loads.source_path                      as source_path,
    loads.source_sha256                    as source_sha256,
    loads.finished_at                      as loaded_at
from source
left join loads on loads.load_id = source._load_id
