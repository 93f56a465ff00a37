-- Applied by the migrate step after the tables and entity.metrics_catalog exist.
-- For readers (metrics_reader may read entity.* only): the ledger, how often each metric is
-- restated, and what a number said at a given time.
create or replace view entity.metrics_restatements as
select
    domain,
    metric_date,
    entity_id,
    metric_name,
    old_value,
    new_value,
    restated_at,
    reason,
    run_id
from metrics_ops.restatements;

create or replace view entity.metrics_restatement_summary as
select
    c.domain,
    c.metric_name,
    c.importance_tier,
    count(r.restatement_id) as restated_values,
    count(distinct r.metric_date) as restated_dates,
    max(r.restated_at) as last_restated_at
from entity.metrics_catalog as c
left join metrics_ops.restatements as r
    on c.domain = r.domain and c.metric_name = r.metric_name
group by c.domain, c.metric_name, c.importance_tier;

-- What (domain, metric, metric_date, entity) said at time `as_of`: the old value of the first
-- restatement after `as_of`, or, if none, the value published now (metrics_unified_domains).
-- Example: select entity.metric_value_as_of('product', 'daily_active_users', date '2026-11-23',
--          'all', timestamptz '2026-11-24 08:00+00');
create or replace function entity.metric_value_as_of(
    p_domain text, p_metric text, p_date date, p_entity text, p_as_of timestamptz
) returns numeric
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select case
        when exists (
            select 1 from metrics_ops.restatements as r
            where r.domain = p_domain and r.metric_name = p_metric and r.metric_date = p_date
                and r.entity_id = p_entity and r.restated_at > p_as_of
        )
        then (
            select r.old_value from metrics_ops.restatements as r
            where r.domain = p_domain and r.metric_name = p_metric and r.metric_date = p_date
                and r.entity_id = p_entity and r.restated_at > p_as_of
            order by r.restated_at, r.restatement_id
            limit 1
        )
        else (
            select u.metric_value from entity.metrics_unified_domains as u
            where u.domain = p_domain and u.metric_name = p_metric and u.metric_date = p_date
                and u.entity_id = p_entity
        )
    end
$$;
