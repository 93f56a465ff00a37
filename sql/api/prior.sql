-- pg_temp.api_prior (dropped at commit): the unified values of one domain on every date a
-- comparison of the dates being built points at (`prior_dates`: D-1, D-7, D - 1 month,
-- D - 1 year and D-364 of each). The caller ANALYZEs it.
create temp table api_prior on commit drop as
select
    u.metric_date,
    u.entity_id,
    u.metric_name,
    u.metric_value
from entity.metrics_unified_domains as u
where u.domain = {{ param('domain') }} and u.metric_date = any({{ param('prior_dates') }}::date[])
