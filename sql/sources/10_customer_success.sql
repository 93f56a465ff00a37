-- Source contract: the input tables the customer-success metrics read.
-- Documented column by column in docs/sources.md. All timestamps are timestamptz and day
-- boundaries are UTC days. The loader of a real warehouse owns these tables; the metrics
-- layer only reads them. `make seed` fills them with synthetic data.

create schema if not exists raw;

-- One row per customer account (current state; churn recorded as a timestamp).
create table if not exists raw.customers (
    customer_id bigint primary key,
    customer_name text not null,
    segment text not null check (segment in ('enterprise', 'mid_market', 'smb')),
    plan text not null,
    region text,
    created_at timestamptz not null,
    churned_at timestamptz
);

-- One row per subscription period; a plan change ends one row and starts another.
-- Active on day X when start_date <= X and (end_date is null or end_date > X).
create table if not exists raw.subscriptions (
    subscription_id bigint primary key,
    customer_id bigint not null references raw.customers (customer_id),
    plan text not null,
    mrr numeric(12, 2) not null check (mrr >= 0),
    start_date date not null,
    end_date date,
    check (end_date is null or end_date > start_date)
);
create index if not exists subscriptions_customer_idx on raw.subscriptions (customer_id);

-- One row per product user (a seat of a customer).
create table if not exists raw.users (
    user_id bigint primary key,
    customer_id bigint not null references raw.customers (customer_id),
    created_at timestamptz not null,
    activated_at timestamptz,
    deactivated_at timestamptz
);
create index if not exists users_customer_idx on raw.users (customer_id);

-- One row per product feature; core features define core_feature_adoption_rate.
create table if not exists raw.features (
    feature_id integer primary key,
    feature_name text not null unique,
    is_core boolean not null,
    released_at timestamptz not null
);

-- One row per product session, attributed to the UTC day it started.
create table if not exists raw.product_sessions (
    session_id bigint primary key,
    user_id bigint not null,
    started_at timestamptz not null,
    duration_seconds integer not null check (duration_seconds >= 0),
    platform text not null check (platform in ('desktop', 'mobile', 'tablet'))
);
create index if not exists product_sessions_started_idx on raw.product_sessions (started_at);

-- One row per product event; feature_id is null for events that touch no feature.
create table if not exists raw.product_events (
    event_id bigint primary key,
    session_id bigint not null,
    user_id bigint not null,
    occurred_at timestamptz not null,
    event_type text not null,
    feature_id integer
);
create index if not exists product_events_occurred_idx on raw.product_events (occurred_at);

-- One row per support ticket; resolved_at is null while unresolved.
create table if not exists raw.support_tickets (
    ticket_id bigint primary key,
    customer_id bigint not null,
    created_at timestamptz not null,
    resolved_at timestamptz,
    priority text not null check (priority in ('low', 'normal', 'high', 'urgent')),
    check (resolved_at is null or resolved_at >= created_at)
);
create index if not exists support_tickets_created_idx on raw.support_tickets (created_at);
create index if not exists support_tickets_resolved_idx on raw.support_tickets (resolved_at);

-- One row per device (appliance or agent) a customer runs.
create table if not exists raw.devices (
    device_id bigint primary key,
    customer_id bigint not null,
    device_type text not null,
    registered_at timestamptz not null,
    decommissioned_at timestamptz
);
create index if not exists devices_customer_idx on raw.devices (customer_id);

-- One row per device per UTC day on which the device reported.
create table if not exists raw.device_telemetry (
    device_id bigint not null,
    reading_date date not null,
    health_score numeric(5, 2) not null check (health_score between 0 and 100),
    volume_processed bigint not null check (volume_processed >= 0),
    primary key (device_id, reading_date)
);
create index if not exists device_telemetry_date_idx on raw.device_telemetry (reading_date);
