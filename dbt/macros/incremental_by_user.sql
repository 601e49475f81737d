{#-
  Incremental builds over the users whose raw rows changed.

  int_user_source_fingerprints keeps, per user, a fingerprint of his raw rows (row count and sum
  of load ids, per raw table) and the time it last changed. A model built incrementally rebuilds
  every row of the users that changed after its own latest built_at, and only those; users whose
  raw rows vanished lose their rows. The user ids are rendered as a literal array so that
  PostgreSQL can push the filter below the window functions of the intermediate views.
-#}

{% macro changed_user_ids() -%}
    {%- set query -%}
        select user_id::text
        from {{ ref('int_user_source_fingerprints') }}
        where changed_at > (
            select coalesce(max(built_at), '-infinity'::timestamptz) from {{ this }}
        )
        order by user_id
    {%- endset -%}
    {{ return(query_values(query)) }}
{%- endmacro %}


{% macro user_id_in(user_ids, column='user_id') -%}
    {{ column }} = any('{ {{- user_ids | join(',') -}} }'::bigint[])
{%- endmacro %}


{#-
  Custom incremental strategy "replace_users": delete every row of the changed users, then insert
  the rows the model produced for them (possibly none). delete+insert on unique_key would keep the
  rows of a user whose raw rows all vanished, since no new row carries his key.
-#}
{% macro get_incremental_replace_users_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ target }}
    where {{ user_id_in(changed_user_ids()) }};

    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ arg_dict['temp_relation'] }};
{%- endmacro %}
