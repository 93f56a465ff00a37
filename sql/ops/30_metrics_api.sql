-- entity.metrics_api: every implemented metric value of every domain, in long format, with its
-- time comparisons; the one long table of the layer (entity.metrics_unified_domains is a view
-- of its first columns, sql/views/05_unified.sql).
-- Grain: one row per metric_date, domain, entity and metric with a non-null value.
-- Maintained by the fan-in per metric_date, from the domain tables and the metric registry: the
-- dates a domain (re)published and the later dates whose comparisons point at them (1 day, 7
-- days, 1 month, 1 year and 364 days later, and the rest of the year for additive metrics);
-- never rebuilt over all history.
-- Partitioned by month of metric_date (entity.metrics_api_y2026m12, ...): the fan-in creates and
-- attaches a month's partition before it writes the month's first date (pipeline.
-- ensure_partitions), so a day's rewrite maintains a month's indexes, not a year's, and is
-- analyzed and vacuumed with its month. Readers query the parent table (or the view).
-- Rules (docs/metrics.md, "Time comparisons"):
--   value_1m_ago: the value of metric_date - 1 month, clamped to the month's last day (the 31st
--     compares with Feb 28/29, Apr 30 ...); value_1y_ago: metric_date - 1 year (Feb 29 -> Feb 28);
--     value_364d_ago: the same weekday a year before;
--   a comparison whose earlier date has no row for the entity is NULL, not 0;
--   change_x = metric_value - value_x_ago; pct_change_x = 100 * change_x / |value_x_ago|,
--     NULL when the base is 0 or missing, rounded to 2 decimals;
--   for additive metrics (a daily flow; the value of metric_date X covers day X-1): mtd_total sums
--     the values of the days of the period to date (MTD: the month of D-1, through D-1), and
--     prior_mtd_total the same days of the previous period (through the same day of month,
--     clamped); QTD and YTD alike;
--   is_improving: compared with the day before, from the metric's direction (NULL when neutral,
--     unchanged or without a base).
create table if not exists entity.metrics_api (
    metric_date date not null,
    domain text not null,
    entity_type text not null,
    entity_id text not null,
    entity_name text,
    metric_name text not null,
    metric_value numeric not null,
    unit text not null,
    importance_tier text not null,
    direction text not null,
    value_1d_ago numeric,
    change_1d numeric,
    pct_change_1d numeric,
    value_7d_ago numeric,
    change_7d numeric,
    pct_change_7d numeric,
    value_1m_ago numeric,
    change_1m numeric,
    pct_change_1m numeric,
    value_1y_ago numeric,
    change_1y numeric,
    pct_change_1y numeric,
    value_364d_ago numeric,
    change_364d numeric,
    pct_change_364d numeric,
    mtd_total numeric,
    prior_mtd_total numeric,
    qtd_total numeric,
    prior_qtd_total numeric,
    ytd_total numeric,
    prior_ytd_total numeric,
    is_improving boolean
) partition by range (metric_date);
-- The grain, as a unique index: (domain, metric_name, metric_date, entity_id), one metric over
-- time (dashboards), entity_id last, so that a lookup of one value (all four key columns equal)
-- is exact too: with (domain, metric_name, metric_date) alone the planner, misjudging a day's
-- rows, read every entity of the metric for each lookup (2.5 s instead of 0.2 s for one day at
-- SCALE=1). The value and the tier ride along (INCLUDE), so a day's overview (the guide's
-- queries 2 and 4: one day, one tier or domain, grouped by metric or entity) is an index-only
-- scan in the index's order: at SCALE=10 guide query 2 read 63,000 buffers of heap and index in
-- ~100 ms, and ~400 buffers in ~20 ms through such an index. Earlier schemas had it beside a
-- primary key on the same columns in date-first order, which no reader needed (a date's rows
-- are found by this one, skipping over metric_name, or by the BRIN below) and which every write
-- maintained: a range's new month writes its rows in this index's order (unified/api_months.sql),
-- so that building it finds them sorted, and without the second key a 90-day backfill's fan-in
-- took 102 s instead of 158 s at SCALE=10 (bench/, P3).
-- A unique index rather than a PRIMARY KEY constraint: an upgrade builds it while readers keep
-- reading (CREATE INDEX locks writers out, not readers), and then drops the old key.
create unique index if not exists metrics_api_key
on entity.metrics_api (domain, metric_name, metric_date, entity_id)
include (metric_value, importance_tier);
alter table entity.metrics_api drop constraint if exists metrics_api_pkey;
drop index if exists entity.metrics_api_metric_value_idx;
drop index if exists entity.metrics_api_metric_idx;
-- one entity's metrics on a date or over time
create index if not exists metrics_api_entity_idx
on entity.metrics_api (domain, entity_id, metric_date);
-- a date's rows on a PostgreSQL without btree skip scan (before 18): rows are written date by
-- date (a day's run) or month by month (a range), so a block range holds few dates
create index if not exists metrics_api_date_idx
on entity.metrics_api using brin (metric_date);

-- The fan-in's bookkeeping of metrics_api: which (domain, metric_date) it has built.
create table if not exists metrics_ops.api_slices (
    domain text not null,
    metric_date date not null,
    built_at timestamptz not null,
    run_id text,
    row_count bigint not null,
    primary key (domain, metric_date)
);

-- The fan-in's bookkeeping of derived tables (the company overview): per metric_date, the highest
-- publication version of its domain tables read before the build. Recording a version read
-- BEFORE the build is safe: a domain publishing meanwhile only makes the date stale again.
create table if not exists metrics_ops.derived_slices (
    target text not null,
    metric_date date not null,
    source_version bigint not null,
    built_at timestamptz not null,
    run_id text,
    primary key (target, metric_date)
);
