{#- The first column of a query's rows, as text; none while dbt only parses the project. -#}
{% macro query_values(query) -%}
    {%- if not execute -%}
        {%- do return([]) -%}
    {%- endif -%}
    {%- do return(run_query(query).columns[0].values() | map('string') | list) -%}
{%- endmacro %}
