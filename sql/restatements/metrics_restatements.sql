-- metrics_ops.restatements for one domain's metric_date being published again: every
-- (entity, implemented numeric metric) whose value differs between what readers see now
-- (entity.<table>) and the run's staged slice, with both values; an entity that appears or
-- disappears is a restatement from or to NULL. Nothing is recorded for a first publication.
-- Generated from the registry through the same unpivot macro as the unified table.
{% from "unified/_unpivot.sql" import unpivot %}
with

published as (
    select
        t.{{ d.id_column }}::text as entity_id,
        m.metric_name,
        m.metric_value
    from entity.{{ d.table }} as t
    {{ unpivot(d) }}
    where t.metric_date = {{ param('metric_date') }}
),

staged as (
    select
        t.{{ d.id_column }}::text as entity_id,
        m.metric_name,
        m.metric_value
    from metrics_staging.{{ d.table }} as t
    {{ unpivot(d) }}
    where t.metric_date = {{ param('metric_date') }} and t.stage_id = {{ param('stage_id') }}
),

changed as (
    select
        coalesce(published.entity_id, staged.entity_id) as entity_id,
        coalesce(published.metric_name, staged.metric_name) as metric_name,
        published.metric_value as old_value,
        staged.metric_value as new_value
    from published
    full outer join staged
        on published.entity_id = staged.entity_id and published.metric_name = staged.metric_name
    where published.metric_value is distinct from staged.metric_value
)

insert into metrics_ops.restatements (
    domain, target, metric_date, entity_id, metric_name, old_value, new_value, restated_at,
    run_id, version, reason
)
select
    '{{ d.name }}' as domain,
    '{{ d.table }}' as target,
    {{ param('metric_date') }}::date as metric_date,
    changed.entity_id,
    changed.metric_name,
    changed.old_value,
    changed.new_value,
    now() as restated_at,
    {{ param('run_id') }} as run_id,
    {{ param('version') }}::bigint as version,
    {{ param('reason') }} as reason
from changed
where exists (
    select 1 from metrics_ops.publish_log as p
    where p.target = '{{ d.table }}' and p.metric_date = {{ param('metric_date') }}
)
