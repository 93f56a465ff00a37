-- entity.metrics_unified_domains for the metric_dates in the bind parameter `dates`.
-- Grain: one row per metric_date, domain, entity and implemented metric with a non-null value.
-- Generated from the metric registry: one branch per domain, one VALUES row per implemented
-- numeric metric, so a metric added to the registry (and its table) appears here with no edit
-- to this file.
insert into entity.metrics_unified_domains (
    metric_date, domain, entity_type, entity_id, entity_name, metric_name, metric_value,
    importance_tier, unit
)
{% for d in domains %}
{% if not loop.first %}union all{% endif %}
select
    t.metric_date,
    '{{ d.name }}' as domain,
    '{{ d.entity_type }}' as entity_type,
    t.{{ d.id_column }}::text as entity_id,
    {% if d.name_column %}t.{{ d.name_column }}{% else %}null{% endif %}::text as entity_name,
    m.metric_name,
    m.metric_value,
    m.importance_tier,
    m.unit
from entity.{{ d.table }} as t
cross join lateral (
    values
    {% for m in d.unified %}
        ('{{ m.name }}', t.{{ m.name }}::numeric, '{{ m.tier }}', '{{ m.unit }}'){% if not loop.last %},{% endif %}
    {% endfor %}
) as m (metric_name, metric_value, importance_tier, unit)
where t.metric_date = any({{ param('dates') }}::date []) and m.metric_value is not null
{% endfor %}
