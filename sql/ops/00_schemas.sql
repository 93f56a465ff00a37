-- Schemas and bookkeeping tables owned by the metrics layer. Idempotent; applied by the migrate
-- step (`metrics-layer migrate`, or the first task of a run when the schema version stored in
-- metrics_ops.schema_version differs from the registry's), never on the daily path otherwise.
--   entity           published metrics tables (what Superset reads)
--   metrics_staging  the day being built, one slice per run, validated before it is published
--   metrics_state    compact daily state that rolling windows are derived from
--   metrics_ops      publication log, check results and other bookkeeping
create schema if not exists entity;
create schema if not exists metrics_staging;
create schema if not exists metrics_state;
create schema if not exists metrics_ops;

-- The schema version applied last: a hash of every DDL statement and of the catalog. The daily
-- path reads this one row; only when it differs does it take DDL locks.
create table if not exists metrics_ops.schema_version (
    id boolean primary key default true check (id),
    schema_hash text not null,
    applied_at timestamptz not null
);

-- Every publication gets the next number: the fan-in compares numbers, not clocks, so a domain
-- publishing while the fan-in reads is never mistaken for included.
create sequence if not exists metrics_ops.publish_version;

-- One row per published (target table, metric_date): the latest publication and by which run.
create table if not exists metrics_ops.publish_log (
    target text not null,
    metric_date date not null,
    published_at timestamptz not null,
    run_id text,
    row_count bigint not null,
    primary key (target, metric_date)
);
alter table metrics_ops.publish_log add column if not exists version bigint;

-- Every publication ever made (a retried publish finds its own, and the on-call person sees
-- which run wrote a day).
create table if not exists metrics_ops.publish_history (
    version bigint primary key,
    target text not null,
    metric_date date not null,
    run_id text,
    row_count bigint not null,
    published_at timestamptz not null
);
create index if not exists publish_history_run_idx
on metrics_ops.publish_history (target, metric_date, run_id);

-- The fan-in's bookkeeping: per (domain, metric_date) slice of the long table (entity.metrics_api,
-- and so the view metrics_unified_domains), the domain publication (version) its values were
-- read from, in the same snapshot as the rows, and how many values it has.
create table if not exists metrics_ops.unified_slices (
    domain text not null,
    metric_date date not null,
    source_version bigint not null,
    built_at timestamptz not null,
    run_id text,
    row_count bigint not null,
    primary key (domain, metric_date)
);

-- One row per validation of a staged day: the outcome and what failed.
create table if not exists metrics_ops.validation_log (
    target text not null,
    metric_date date not null,
    run_id text not null,
    validated_at timestamptz not null,
    success boolean not null,
    evaluated integer not null,
    failures jsonb not null default '[]',
    primary key (target, metric_date, run_id)
);

-- One row per (state, day) already built into metrics_state; a day missing here is rebuilt.
create table if not exists metrics_ops.state_days (
    state text not null,
    activity_date date not null,
    built_at timestamptz not null,
    primary key (state, activity_date)
);

-- Late data across domains: every state day carries the checksum of its rows and a version that
-- moves only when its rows change (or it is built for the first time); every publication records
-- the highest state version its build read. A published date is stale for ANY domain reading
-- the state when a day of its window has a newer version, whichever run rebuilt the day, so a
-- state shared by two domains is rebuilt once per run and still republished by both.
create sequence if not exists metrics_ops.state_version;
alter table metrics_ops.state_days add column if not exists checksum text;
alter table metrics_ops.state_days add column if not exists version bigint not null default 0;
alter table metrics_ops.publish_log add column if not exists state_version bigint not null default 0;
alter table metrics_ops.publish_history add column if not exists state_version bigint not null default 0;

-- What each staged build read: the highest version of the state days of its window (read
-- before the build query, so it never claims more than the build saw). Publish copies it.
create table if not exists metrics_ops.build_log (
    target text not null,
    metric_date date not null,
    stage_id text not null,
    built_at timestamptz not null,
    state_version bigint not null,
    primary key (target, metric_date, stage_id)
);

-- The definition (table.sql + build.sql) each compact state was built with: when it changes,
-- migrate drops the state and forgets its days, and the next runs rebuild the days they read.
create table if not exists metrics_ops.state_definitions (
    state text primary key,
    definition_hash text not null,
    applied_at timestamptz not null
);
