-- The rows of pg_temp.api_prior (created and refilled like api_target, see api/target.sql): the
-- unified values of one domain on every date a comparison of `dates` points at (D-1, D-7,
-- D - 1 month, D - 1 year and D-364 of each, the keys sql/api/metrics_api.sql joins on). The
-- caller ANALYZEs it.
select
    u.metric_date,
    u.entity_id,
    u.metric_name,
    u.metric_value
from entity.metrics_unified_domains as u
where
    u.domain = {{ param('domain') }}
    and u.metric_date = any(array(
        select distinct v.x
        from unnest({{ param('dates') }}::date[]) as d (d)
        cross join lateral (
            values
            (d.d - 1), (d.d - 7), ((d.d - interval '1 month')::date),
            ((d.d - interval '1 year')::date), (d.d - 364)
        ) as v (x)
    ))
