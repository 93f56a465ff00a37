-- The rows of pg_temp.api_target for the metric_dates in `dates` whose domain table changed: one
-- domain's values, unpivoted from entity.<table> with their catalog facts (the rows
-- sql/api/metrics_api.sql builds), and the bookkeeping of what they were built from, in ONE
-- statement: the rows read from entity.<table> and the publication version recorded in
-- metrics_ops.unified_slices come from the same snapshot, so a domain publishing meanwhile is
-- never recorded as included. pipeline.build_api creates the table and ANALYZEs it.
-- Grain: one row per metric_date, entity and implemented metric with a non-null value.
-- Generated from the metric registry: one VALUES row per implemented numeric metric, so a
-- metric added to the registry (and its table) appears here with no edit to this file.
{% from "unified/_unpivot.sql" import unpivot %}
with inserted as (
    insert into pg_temp.api_target (
        metric_date, domain, entity_type, entity_id, entity_name, metric_name, metric_value,
        importance_tier, unit, direction, additive
    )
    select
        t.metric_date,
        '{{ d.name }}' as domain,
        '{{ d.entity_type }}' as entity_type,
        t.{{ d.id_column }}::text as entity_id,
        {% if d.name_column %}t.{{ d.name_column }}{% else %}null{% endif %}::text as entity_name,
        m.metric_name,
        m.metric_value,
        m.importance_tier,
        m.unit,
        c.direction,
        c.additive
    from entity.{{ d.table }} as t
    {{ unpivot(d) }}
    inner join entity.metrics_catalog as c
        on c.domain = '{{ d.name }}' and m.metric_name = c.metric_name
    where t.metric_date = any({{ param('dates') }}::date []) and m.metric_value is not null
    returning metric_date
),

counts as (
    select
        metric_date,
        count(*) as row_count
    from inserted
    group by metric_date
)

insert into metrics_ops.unified_slices (
    domain, metric_date, source_version, built_at, run_id, row_count
)
select
    '{{ d.name }}' as domain,
    p.metric_date,
    coalesce(p.version, 0) as source_version,
    now() as built_at,
    {{ param('run_id') }} as run_id,
    coalesce(c.row_count, 0) as row_count
from metrics_ops.publish_log as p
left join counts as c on p.metric_date = c.metric_date
where p.target = '{{ d.table }}' and p.metric_date = any({{ param('dates') }}::date [])
on conflict (domain, metric_date) do update set
    source_version = excluded.source_version,
    built_at = excluded.built_at,
    run_id = excluded.run_id,
    row_count = excluded.row_count
