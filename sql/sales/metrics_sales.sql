-- metrics_sales for one metric_date.
-- Grain: one row per active sales rep per metric_date (active: hired before D, not gone before D).
-- As of: D (bind parameter `metric_date`) is the snapshot at 00:00 UTC on D; only rows before D are seen.
--   "30d" covers [D-30, D), "90d" covers [D-90, D). "MTD" covers [first day of the month of D-1, D):
--   the snapshot's month is the month of its last complete day D-1, so D = the 1st reports the
--   whole previous month (D = 2026-04-01: March 1..31) and never an empty period.
--   Opportunities are open on D when created before D and not closed before D.
--   No dimension history: rep_name, team, an opportunity's amount, stage and rep_id and a lead's
--   assigned_rep_id are today's source values, so rebuilding a past D uses today's values.
-- Sources: raw.sales_reps, raw.opportunities, raw.leads, and metrics_state.sales_activity_daily
--   (activity counts, refreshed for [D-30, D) before this query runs).
-- Definitions, units and tiers: include/registry/sales.yaml.

with

params as (
    select
        {{ param('metric_date') }}::date as d,
        {{ param('metric_date') }}::date - 30 as d_30,
        {{ param('metric_date') }}::date - 90 as d_90,
        -- first day of the month of D-1 (timestamp without time zone: no session time zone involved)
        date_trunc('month', ({{ param('metric_date') }}::date - 1)::timestamp)::date as month_start
),

-- ---------------------------------------------------------------- import CTEs
reps as (
    select reps.*
    from {{ source_schema }}.sales_reps as reps, params
    where
        reps.hired_at < params.d
        and (reps.left_at is null or reps.left_at >= params.d)
),

opportunities as (
    -- opportunities open on D or closed in the last 90 days (MTD starts <= 31 days before D)
    select opportunities.*
    from {{ source_schema }}.opportunities as opportunities, params
    where
        opportunities.created_at < params.d
        and (opportunities.closed_at is null or opportunities.closed_at >= params.d_90)
),

activity as (
    select sad.*
    from metrics_state.sales_activity_daily as sad, params
    where sad.activity_date >= params.d_30 and sad.activity_date < params.d
),

leads as (
    select leads.*
    from {{ source_schema }}.leads as leads, params
    where
        leads.assigned_rep_id is not null
        and leads.mql_at >= params.d_90
        and leads.mql_at < params.d
),

-- ---------------------------------------------------------------- logic
deals as (
    select
        opportunities.rep_id,
        count(*) filter (
            where opportunities.closed_at is null or opportunities.closed_at >= params.d
        ) as open_opportunities,
        sum(opportunities.amount) filter (
            where opportunities.closed_at is null or opportunities.closed_at >= params.d
        ) as total_pipeline_value,
        count(*) filter (
            where opportunities.stage = 'closed_won' and opportunities.closed_at >= params.month_start
            and opportunities.closed_at < params.d
        ) as deals_won_mtd,
        sum(opportunities.amount) filter (
            where opportunities.stage = 'closed_won' and opportunities.closed_at >= params.month_start
            and opportunities.closed_at < params.d
        ) as revenue_closed_mtd,
        count(*) filter (
            where opportunities.stage = 'closed_won' and opportunities.closed_at < params.d
        ) as won_90d,
        count(*) filter (
            where opportunities.stage = 'closed_lost' and opportunities.closed_at < params.d
        ) as lost_90d,
        sum(opportunities.amount) filter (
            where opportunities.stage = 'closed_won' and opportunities.closed_at < params.d
        ) as won_revenue_90d,
        avg(opportunities.amount) filter (
            where opportunities.stage = 'closed_won' and opportunities.closed_at < params.d
        ) as avg_deal_size,
        -- one exact division (total seconds / (deals x 86400)), rounded once in final: averaging
        -- per-deal divisions drifts below .xx5 ties
        sum(extract(epoch from opportunities.closed_at - opportunities.created_at)) filter (
            where opportunities.stage = 'closed_won' and opportunities.closed_at < params.d
        ) / nullif(count(*) filter (
            where opportunities.stage = 'closed_won' and opportunities.closed_at < params.d
        ) * 86400.0, 0) as avg_sales_cycle_days
    from opportunities, params
    group by opportunities.rep_id
),

activity_counts as (
    select
        rep_id,
        sum(calls) as calls_made_30d,
        sum(emails) as emails_sent_30d,
        sum(meetings) as meetings_held_30d
    from activity
    group by rep_id
),

lead_counts as (
    select
        leads.assigned_rep_id as rep_id,
        count(*) filter (where leads.mql_at >= params.d_30) as total_mqls,
        count(*) as mqls_90d,
        count(*) filter (where leads.converted_at < params.d) as converted_mqls_90d
    from leads, params
    group by leads.assigned_rep_id
),

final as (
    select
        params.d as metric_date,
        reps.rep_id,
        reps.rep_name,
        reps.team,
        coalesce(deals.total_pipeline_value, 0) as total_pipeline_value,
        coalesce(deals.open_opportunities, 0) as open_opportunities,
        round(coalesce(deals.total_pipeline_value, 0) / nullif(deals.won_revenue_90d, 0), 4)
            as pipeline_coverage_ratio,
        -- the name the guide's Pipeline Velocity calculated field uses (registry: pipeline_value)
        coalesce(deals.total_pipeline_value, 0) as pipeline_value,
        coalesce(deals.deals_won_mtd, 0) as deals_won_mtd,
        coalesce(deals.revenue_closed_mtd, 0) as revenue_closed_mtd,
        round(deals.won_90d::numeric / nullif(deals.won_90d + deals.lost_90d, 0), 4) as win_rate,
        round(deals.avg_deal_size, 2) as avg_deal_size,
        round(deals.avg_sales_cycle_days, 2) as avg_sales_cycle_days,
        coalesce(activity_counts.calls_made_30d, 0) as calls_made_30d,
        coalesce(activity_counts.emails_sent_30d, 0) as emails_sent_30d,
        coalesce(activity_counts.meetings_held_30d, 0) as meetings_held_30d,
        coalesce(lead_counts.total_mqls, 0) as total_mqls,
        round(lead_counts.converted_mqls_90d::numeric / nullif(lead_counts.mqls_90d, 0), 4)
            as mql_conversion_rate
    from reps
    cross join params
    left join deals on reps.rep_id = deals.rep_id
    left join activity_counts on reps.rep_id = activity_counts.rep_id
    left join lead_counts on reps.rep_id = lead_counts.rep_id
)

select * from final
