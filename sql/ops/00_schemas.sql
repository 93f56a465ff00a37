-- Schemas and bookkeeping tables owned by the metrics layer. Idempotent; applied before every
-- build (cheap: a handful of catalog look-ups).
--   entity           published metrics tables (what Superset reads)
--   metrics_staging  the day being built, validated before it is published
--   metrics_state    compact daily state that rolling windows are derived from
--   metrics_ops      publication log and other bookkeeping
create schema if not exists entity;
create schema if not exists metrics_staging;
create schema if not exists metrics_state;
create schema if not exists metrics_ops;

-- One row per published (target table, metric_date): when it was last published and by which
-- run. The fan-in DAG rebuilds the unified tables for dates published after its own last build.
create table if not exists metrics_ops.publish_log (
    target text not null,
    metric_date date not null,
    published_at timestamptz not null,
    run_id text,
    row_count bigint not null,
    primary key (target, metric_date)
);

-- One row per (state, day) already built into metrics_state; a day missing here is rebuilt.
create table if not exists metrics_ops.state_days (
    state text not null,
    activity_date date not null,
    built_at timestamptz not null,
    primary key (state, activity_date)
);
