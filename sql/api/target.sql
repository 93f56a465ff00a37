-- pg_temp.api_target (dropped at commit): the unified values of one domain's `dates` with their
-- catalog facts, the rows sql/api/metrics_api.sql builds. The caller ANALYZEs it.
create temp table api_target on commit drop as
select
    u.*,
    c.direction,
    c.additive
from entity.metrics_unified_domains as u
inner join entity.metrics_catalog as c
    on u.domain = c.domain and u.metric_name = c.metric_name
where u.domain = {{ param('domain') }} and u.metric_date = any({{ param('dates') }}::date[])
