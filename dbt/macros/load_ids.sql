{#-
  Load ids as literals in a filter, so that PostgreSQL can skip a large load's own table (a child
  of the raw table with CHECK (_load_id = <id>), watcher/load_tables.py) when it plans: it proves
  a table empty for a constant list of at most 100 values, so longer lists are split into several
  of 100, joined by "or". No ids: a filter no row passes.
-#}
{% macro load_id_in(load_ids, column='load_id') -%}
    {%- if not load_ids -%}
        false
    {%- else -%}
        ({%- for chunk in load_ids | batch(100) -%}
            {{ ' or ' if not loop.first }}{{ column }} = any('{ {{- chunk | join(',') -}} }'::bigint[])
        {%- endfor -%})
    {%- endif -%}
{%- endmacro %}

