{#- Rows where any of the given columns is null (the parts of a composite key). -#}
{% test not_null_columns(model, column_names) %}
select *
from {{ model }}
where {% for column in column_names %}{{ column }} is null{% if not loop.last %} or {% endif %}{% endfor %}
{% endtest %}
