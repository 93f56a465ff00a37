-- metrics_state.sales_activity_daily (DDL; applied by ensure_schema before every build).
-- Grain: one row per sales rep per UTC day on which the rep logged at least one activity.
-- The 30-day activity counts of metrics_sales are summed from this table instead of rescanning
-- raw.sales_activities: a day is built once (and again inside the late-data lookback).
create table if not exists metrics_state.sales_activity_daily (
    activity_date date not null,
    rep_id bigint not null,
    calls integer not null,
    emails integer not null,
    meetings integer not null,
    primary key (activity_date, rep_id)
);
