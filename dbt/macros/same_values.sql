{#- (left.a, left.b, ...) is not distinct from (right.a, right.b, ...): equal values, nulls alike. -#}
{% macro same_values(left, right, columns) -%}
    ({% for c in columns %}{{ left }}.{{ c }}{{ ', ' if not loop.last }}{% endfor %})
        is not distinct from
    ({% for c in columns %}{{ right }}.{{ c }}{{ ', ' if not loop.last }}{% endfor %})
{%- endmacro %}
