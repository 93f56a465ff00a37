-- Source contract: the input tables the marketing metrics read (sales reads raw.leads too).
-- Documented column by column in docs/sources.md. All timestamps are timestamptz and day
-- boundaries are UTC days. The loader of a real warehouse owns these tables; the metrics
-- layer only reads them. `make seed` fills them with synthetic data.

create schema if not exists raw;

-- One row per marketing campaign. Paid campaigns run on an ad platform (platform not null);
-- organic, email, event and referral programmes have platform null. Live on day X when
-- started_on <= X and (ended_on is null or ended_on >= X).
create table if not exists raw.ad_campaigns (
    campaign_id bigint primary key,
    campaign_name text not null,
    platform text,
    channel text not null,
    started_on date not null,
    ended_on date,
    check (ended_on is null or ended_on >= started_on)
);

-- One row per campaign per UTC day with spend, as the ad platform reports it. platform is
-- the platform that billed the spend (the same as the campaign's platform).
create table if not exists raw.ad_spend_daily (
    spend_date date not null,
    campaign_id bigint not null references raw.ad_campaigns (campaign_id),
    platform text not null,
    spend numeric(12, 2) not null check (spend >= 0),
    impressions bigint not null check (impressions >= 0),
    clicks bigint not null check (clicks >= 0),
    primary key (spend_date, campaign_id)
);
create index if not exists ad_spend_daily_date_idx on raw.ad_spend_daily (spend_date);

-- One row per lead (a person who left contact details), current state. A lead becomes a
-- marketing-qualified lead (MQL) at mql_at, is then assigned to a sales rep, and converts when
-- it becomes a customer (converted_at, customer_id). Reassignment is not historized.
create table if not exists raw.leads (
    lead_id bigint primary key,
    campaign_id bigint references raw.ad_campaigns (campaign_id),
    created_at timestamptz not null,
    mql_at timestamptz,
    assigned_rep_id bigint,
    converted_at timestamptz,
    customer_id bigint,
    check (mql_at is null or mql_at >= created_at),
    check (converted_at is null or converted_at >= created_at),
    check ((converted_at is null) = (customer_id is null))
);
create index if not exists leads_mql_idx on raw.leads (mql_at);
create index if not exists leads_converted_idx on raw.leads (converted_at);
create index if not exists leads_rep_idx on raw.leads (assigned_rep_id);

-- One row per marketing touch of a lead (ad click, email click, webinar, visit...). customer_id
-- is filled once the lead has converted.
create table if not exists raw.attribution_touchpoints (
    touchpoint_id bigint primary key,
    lead_id bigint not null,
    customer_id bigint,
    channel text not null,
    touched_at timestamptz not null
);
create index if not exists attribution_touchpoints_lead_idx on raw.attribution_touchpoints (lead_id);

-- One row per website visit, attributed to the UTC day it started. bounced: a single-page visit;
-- converted: the visit ended with a form fill (demo request, trial signup, content download).
create table if not exists raw.website_sessions (
    session_id bigint primary key,
    started_at timestamptz not null,
    channel text not null,
    bounced boolean not null,
    converted boolean not null
);
create index if not exists website_sessions_started_idx on raw.website_sessions (started_at);
