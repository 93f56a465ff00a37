-- Every check result, one row per check per (run, domain, metric_date): GX expectations on the
-- staged day, the anomaly checks and the source checks. `severity` is what the registry gives
-- the check: an `error` that fails blocks publication, a `warn` alerts and publishes.
-- `entity` names up to five offending entities (names where the domain has them), `details`
-- keeps the offending rows and the figures the verdict came from. Readers get
-- entity.metrics_check_results (Superset's check-history chart).
create table if not exists metrics_ops.check_results (
    result_id bigint generated always as identity primary key,
    checked_at timestamptz not null default now(),
    run_id text not null,
    dag_id text not null,
    domain text not null,
    metric_date date not null,
    check_kind text not null check (check_kind in ('expectation', 'anomaly', 'source')),
    check_name text not null,
    target text not null,
    metric text,
    entity text,
    severity text not null check (severity in ('error', 'warn')),
    success boolean not null,
    observed text,
    expected text,
    details jsonb not null default '{}'
);
create index if not exists check_results_run_idx
on metrics_ops.check_results (dag_id, run_id);
create index if not exists check_results_day_idx
on metrics_ops.check_results (domain, metric_date, check_name);

-- Alerts sent (or suppressed as duplicates), so the same failure of the same date is announced
-- once and its recovery is announced once. `fingerprint` identifies the failure (DAG, date and
-- the failing checks or the error); `resolved_at` is set when the date passes again.
create table if not exists metrics_ops.alert_log (
    alert_id bigint generated always as identity primary key,
    dag_id text not null,
    metric_date date,
    fingerprint text not null,
    severity text not null,
    checks jsonb not null default '[]',
    run_id text,
    first_sent_at timestamptz not null default now(),
    last_sent_at timestamptz not null default now(),
    suppressed integer not null default 0,
    delivered boolean not null default false,
    resolved_at timestamptz,
    resolved_run_id text
);
create index if not exists alert_log_open_idx
on metrics_ops.alert_log (dag_id, metric_date) where resolved_at is null;

-- `kind`: the runbook section the alert linked (docs/runbook.md#<kind>); `task_id`: the task
-- that failed (or published, for warnings): the fan-in's overview publication resolves only
-- the overview's own alerts, not build_unified's.
alter table metrics_ops.alert_log add column if not exists kind text;
alter table metrics_ops.alert_log add column if not exists task_id text;
