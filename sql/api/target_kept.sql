-- The rows of pg_temp.api_target for the metric_dates in `dates` whose values did not change but
-- whose comparisons point at a date that did (pipeline.api_dates): the values metrics_api holds
-- for them (read before the caller deletes those dates), with the catalog's current facts.
insert into pg_temp.api_target (
    metric_date, domain, entity_type, entity_id, entity_name, metric_name, metric_value,
    importance_tier, unit, direction, additive
)
select
    a.metric_date,
    a.domain,
    a.entity_type,
    a.entity_id,
    a.entity_name,
    a.metric_name,
    a.metric_value,
    a.importance_tier,
    a.unit,
    c.direction,
    c.additive
from entity.metrics_api as a
inner join entity.metrics_catalog as c
    on a.domain = c.domain and a.metric_name = c.metric_name
where a.domain = {{ param('domain') }} and a.metric_date = any({{ param('dates') }}::date[])
