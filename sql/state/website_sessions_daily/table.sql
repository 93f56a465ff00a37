-- metrics_state.website_sessions_daily (DDL; applied by ensure_schema before every build).
-- Grain: one row per UTC day per traffic channel with at least one website session.
-- The 30-day website metrics of metrics_marketing are summed from this table instead of
-- rescanning raw.website_sessions: a day is built once (and again inside the late-data lookback).
create table if not exists metrics_state.website_sessions_daily (
    activity_date date not null,
    channel text not null,
    sessions integer not null,
    bounced_sessions integer not null,
    converted_sessions integer not null,
    primary key (activity_date, channel)
);
