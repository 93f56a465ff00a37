-- Source contract: the input tables the sales metrics read (with raw.leads, see 30_marketing.sql).
-- Documented column by column in docs/sources.md. All timestamps are timestamptz and day
-- boundaries are UTC days. The loader of a real warehouse owns these tables; the metrics
-- layer only reads them. `make seed` fills them with synthetic data.

create schema if not exists raw;

-- One row per sales rep (account executive). Active on D when hired_at < D and (left_at is
-- null or left_at >= D).
create table if not exists raw.sales_reps (
    rep_id bigint primary key,
    rep_name text not null,
    team text not null,
    hired_at timestamptz not null,
    left_at timestamptz,
    check (left_at is null or left_at > hired_at)
);

-- One row per opportunity (deal), current state. Open on D when created_at < D and (closed_at
-- is null or closed_at >= D); stage and amount are today's values (not historized). A won
-- opportunity names the customer it created; its closed_at is that customer's created_at.
create table if not exists raw.opportunities (
    opportunity_id bigint primary key,
    rep_id bigint not null,
    lead_id bigint,
    customer_id bigint,
    amount numeric(14, 2) not null check (amount >= 0),
    stage text not null check (stage in (
        'prospecting', 'qualification', 'proposal', 'negotiation', 'closed_won', 'closed_lost'
    )),
    created_at timestamptz not null,
    closed_at timestamptz,
    check ((closed_at is null) = (stage not in ('closed_won', 'closed_lost'))),
    check (closed_at is null or closed_at >= created_at),
    check (customer_id is null or stage = 'closed_won')
);
create index if not exists opportunities_rep_idx on raw.opportunities (rep_id);
create index if not exists opportunities_closed_idx on raw.opportunities (closed_at);

-- One row per logged sales activity of a rep, attributed to the UTC day it happened.
create table if not exists raw.sales_activities (
    activity_id bigint primary key,
    rep_id bigint not null,
    activity_type text not null check (activity_type in ('call', 'email', 'meeting')),
    occurred_at timestamptz not null,
    opportunity_id bigint,
    lead_id bigint
);
create index if not exists sales_activities_occurred_idx on raw.sales_activities (occurred_at);
