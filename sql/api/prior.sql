-- The rows of pg_temp.api_prior (created and refilled like api_target, see
-- pipeline.build_api): the values of one domain on every date a comparison of `dates` points at
-- (D-1, D-7, D - 1 month, D - 1 year and D-364 of each, the keys sql/api/metrics_api.sql joins
-- on). Filled after the caller deleted `dates` from metrics_api: an earlier date's value is in
-- metrics_api (rebuilt already if it changed: the caller goes oldest month first), a date of
-- `dates` itself is in api_target. The caller ANALYZEs it.
with compared as (
    select array(
        select distinct v.x
        from unnest({{ param('dates') }}::date[]) as d (d)
        cross join lateral (
            values
            (d.d - 1), (d.d - 7), ((d.d - interval '1 month')::date),
            ((d.d - interval '1 year')::date), (d.d - 364)
        ) as v (x)
    ) as dates
)

select
    a.metric_date,
    a.entity_id,
    a.metric_name,
    a.metric_value
from entity.metrics_api as a
where
    a.domain = {{ param('domain') }}
    and a.metric_date = any((select c.dates from compared as c)::date[])
union all
select
    t.metric_date,
    t.entity_id,
    t.metric_name,
    t.metric_value
from pg_temp.api_target as t
where t.metric_date = any((select c.dates from compared as c)::date[])
