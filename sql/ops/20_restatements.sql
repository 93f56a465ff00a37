-- The restatement ledger: one row per (metric_date, entity, metric) whose published value
-- changed when the day was published again, with the old and new value, when, by which run and
-- why (late data caught by the lookback, a backfill, a manual rerun, a definition change).
-- Written by publish, in the same transaction as the new rows, only for days published before.
create table if not exists metrics_ops.restatements (
    restatement_id bigserial primary key,
    domain text not null,
    target text not null,            -- the entity table
    metric_date date not null,
    entity_id text not null,
    metric_name text not null,
    old_value numeric,               -- null: the entity had no value (or no row) before
    new_value numeric,               -- null: it has none now
    restated_at timestamptz not null,
    run_id text,
    version bigint,                  -- the publication (metrics_ops.publish_history) that restated it
    reason text not null
);
create index if not exists restatements_lookup_idx
on metrics_ops.restatements (domain, metric_name, metric_date, entity_id, restated_at);

-- The definition (registry file + build SQL) a day was published under: a republication under
-- another one is a definition change.
alter table metrics_ops.publish_history add column if not exists definition_hash text;
