-- metrics_state.user_activity_daily (DDL; applied by ensure_schema before every build).
-- Grain: one row per user per UTC day on which the user had a product event or a session.
-- Rolling windows (30-day actives, adoption, engagement) are derived from this table instead of
-- rescanning raw events: a day is built once (and again inside the late-data lookback).
create table if not exists metrics_state.user_activity_daily (
    activity_date date not null,
    user_id bigint not null,
    customer_id bigint,               -- null when the event's user is unknown to raw.users
    events integer not null,
    sessions integer not null,
    desktop_sessions integer not null,
    mobile_sessions integer not null,
    session_seconds bigint not null,
    -- the distinct features touched that day: ids 0..63 as bits of feature_mask (bit n = feature
    -- n; windows OR them together), any other id in other_feature_ids (normally empty)
    feature_mask bigint not null,
    other_feature_ids integer[] not null,
    primary key (activity_date, user_id)
);
create index if not exists user_activity_daily_customer_idx
on metrics_state.user_activity_daily (customer_id, activity_date);
