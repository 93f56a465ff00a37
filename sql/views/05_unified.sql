-- entity.metrics_unified_domains: every implemented metric of every domain in long format, the
-- relation the guide's example queries read. Grain: one row per metric_date, domain, entity and
-- metric with a non-null value (the key of entity.metrics_api).
-- A view of entity.metrics_api, which holds the same values with their comparisons: the layer
-- stores each value once. Until version 0.2 it was a table of its own, and the fan-in wrote
-- every value twice (at SCALE=10 half of a backfill's writes, and 1.5 s of a daily run's 8.6 s).
-- Readers filter it as they would the table: the planner pushes their conditions into
-- metrics_api, its monthly partitions and its unique key metrics_api_key.
create or replace view entity.metrics_unified_domains as
select
    metric_date,
    domain,
    entity_type,
    entity_id,
    entity_name,
    metric_name,
    metric_value,
    importance_tier,
    unit
from entity.metrics_api;

comment on view entity.metrics_unified_domains is
'Every implemented metric value of every domain, one row per metric_date, domain, entity_id and '
'metric_name: a view of entity.metrics_api (which adds the time comparisons).';
