{#-
  Data tests on 1,000,000-row models cost more than the incremental build they check, so the
  tests of this project look at what the build could have changed (config `where`, set per
  folder in dbt_project.yml). The scopes:

    new_loads     staging: raw rows of loads newer than the last build saw (the loader's ids
                  only grow; int_user_source_fingerprints keeps the highest one seen);
    new_users     intermediate: every row of the users who have rows in those loads;
    latest_build  marts: the rows written by the model's latest build (built_at is constant
                  within a build, and a build rewrites every row of each changed user).

  A key that includes user_id is thus fully checked for every user the build touched. A full
  refresh (or a first build, before the fingerprints exist) tests every row. Any other `where`
  is applied as dbt does by default.

  "The highest load id the last build saw" must be read before this build rebuilds the
  fingerprints; tests that run after it (intermediate tests in `dbt build`, every test when the
  pipeline runs the tests after the models) would otherwise see no new load. The pipeline reads
  it before the build and passes it as the var `loads_seen_before_build` (0: nothing seen yet,
  test every row); without the var it is read from the fingerprints when the test runs.
-#}
{% macro default__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- if where in ('new_loads', 'new_users', 'latest_build') -%}
        {%- set condition = test_scope_condition(where, relation) -%}
        {%- if condition -%}
            {%- do return('(select * from ' ~ relation ~ ' where ' ~ condition ~ ') dbt_subquery') -%}
        {%- endif -%}
        {%- do return(relation) -%}
    {%- elif where -%}
        {%- do return('(select * from ' ~ relation ~ ' where ' ~ where ~ ') dbt_subquery') -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}


{#-
  The condition is computed here and written as literals: with a subquery in it, PostgreSQL
  would plan for its default guess (after a full refresh every row has the same built_at, so
  "built_at = ?" looks like the whole table) and scan everything.
-#}
{% macro test_scope_condition(scope, relation) -%}
    {%- if flags.FULL_REFRESH or not execute -%}
        {%- do return(none) -%}
    {%- endif -%}
    {%- if scope == 'latest_build' -%}
        {%- set latest = scalar_query_value('select max(built_at)::text from ' ~ relation) -%}
        {%- do return(none if latest is none else "built_at = '" ~ latest ~ "'::timestamptz") -%}
    {%- endif -%}
    {%- set seen = var('loads_seen_before_build', none) -%}
    {%- if seen is none -%}
        {%- set seen = loads_seen() -%}
    {%- endif -%}
    {%- if seen is none or seen | int == 0 -%}
        {%- do return(none) -%}
    {%- endif -%}
    {%- set seen = seen | int -%}
    {%- if scope == 'new_loads' -%}
        {%- do return('load_id > ' ~ seen) -%}
    {%- endif -%}
    {%- set staging = generate_schema_name('staging', none) -%}
    {%- set query -%}
        select user_id::text from {{ staging }}.stg_daily_activity
        where load_id > {{ seen }} and user_id is not null
        union
        select user_id::text from {{ staging }}.stg_sleep
        where load_id > {{ seen }} and user_id is not null
    {%- endset -%}
    {%- set user_ids = run_query(query).columns[0].values() | list -%}
    {%- do return(user_id_in(user_ids)) -%}
{%- endmacro %}


{#- The highest load id in the fingerprints (0 when empty), none before they exist. -#}
{% macro loads_seen() -%}
    {%- set fingerprints = adapter.get_relation(
            database=target.database,
            schema=generate_schema_name('intermediate', none),
            identifier='int_user_source_fingerprints') -%}
    {%- if fingerprints is none -%}
        {%- do return(none) -%}
    {%- endif -%}
    {%- do return(scalar_query_value(
            'select coalesce(max(greatest(activity_max_load_id, sleep_max_load_id)), 0)::text from '
            ~ fingerprints)) -%}
{%- endmacro %}


{% macro scalar_query_value(query) -%}
    {%- set value = run_query(query).columns[0].values()[0] -%}
    {%- do return(value) -%}
{%- endmacro %}
