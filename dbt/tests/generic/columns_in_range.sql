{#-
  Values outside their range, for several columns of a model in one scan (one test node instead
  of one per column: on a big table each node costs a scan, on an incremental build its overhead).
  ranges: {column: [min, max]}; a null bound is open; null values pass (test not_null for them).
-#}
{% test columns_in_range(model, ranges) %}
select checked.column_name, checked.value as out_of_range_value
from (select * from {{ model }}) as tested
cross join lateral (
    values
    {%- for column, bounds in ranges.items() %}
        (
            '{{ column }}',
            tested.{{ column }}::double precision,
            {{ 'null' if bounds[0] is none else bounds[0] }}::double precision,
            {{ 'null' if bounds[1] is none else bounds[1] }}::double precision
        ){{ "," if not loop.last }}
    {%- endfor %}
) as checked (column_name, value, min_value, max_value)
where checked.value < checked.min_value
   or checked.value > checked.max_value
{% endtest %}
