{#- The registry's one rule for turning a domain row into metric values: one VALUES row per
    implemented numeric metric of domain `d`, for the row alias `t`. Used by the unified table
    and the restatement diff, so both always see the same (metric_name, metric_value). -#}
{% macro unpivot(d, t='t') -%}
cross join lateral (
    values
    {% for m in d.unified %}
        ('{{ m.name }}', {{ t }}.{{ m.name }}::numeric, '{{ m.tier }}', '{{ m.unit }}'){% if not loop.last %},{% endif %}
    {% endfor %}
) as m (metric_name, metric_value, importance_tier, unit)
{%- endmacro %}
