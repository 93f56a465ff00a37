-- The rows of pg_temp.api_target (pipeline.build_api creates it from this query for a rebuild's
-- first month of dates, then empties and refills it for each next month): the unified values of
-- one domain's `dates` with their catalog facts, the rows sql/api/metrics_api.sql builds. The
-- caller ANALYZEs it.
select
    u.*,
    c.direction,
    c.additive
from entity.metrics_unified_domains as u
inner join entity.metrics_catalog as c
    on u.domain = c.domain and u.metric_name = c.metric_name
where u.domain = {{ param('domain') }} and u.metric_date = any({{ param('dates') }}::date[])
