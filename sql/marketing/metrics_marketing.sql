-- metrics_marketing for one metric_date.
-- Grain: one row per metric_date; the id column marketing_scope is the constant 'all'.
-- As of: D (bind parameter `metric_date`) is the snapshot at 00:00 UTC on D; only rows before D are seen.
--   "30d" windows cover [D-30, D); lead conversion looks at the MQLs of [D-90, D).
-- Sources: raw.ad_campaigns, raw.ad_spend_daily, raw.leads, raw.attribution_touchpoints,
--   raw.opportunities (won revenue for ROI), raw.customers (new customers for CAC), and
--   metrics_state.website_sessions_daily (refreshed for [D-30, D) before this query runs).
-- Ad platforms with their own columns: google_ads, meta_ads, linkedin_ads. Spend on any other
-- platform lands in other_platforms_spend and in every total (never dropped); the tier-1 suite
-- fails the day while it is not 0.
-- Definitions, units and tiers: include/registry/marketing.yaml.

with

params as (
    select
        {{ param('metric_date') }}::date as d,
        {{ param('metric_date') }}::date - 30 as d_30,
        {{ param('metric_date') }}::date - 90 as d_90
),

-- ---------------------------------------------------------------- import CTEs
spend as (
    select
        spend_daily.platform,
        spend_daily.spend,
        spend_daily.spend_date = params.d - 1 as on_last_day
    from {{ source_schema }}.ad_spend_daily as spend_daily, params
    where spend_daily.spend_date >= params.d_30 and spend_daily.spend_date < params.d
),

leads as (
    -- leads that matter for D: MQL in the last 90 days, or converted in the last 30
    select
        leads.lead_id,
        leads.campaign_id,
        leads.mql_at,
        leads.converted_at
    from {{ source_schema }}.leads as leads, params
    where
        (leads.mql_at >= params.d_90 and leads.mql_at < params.d)
        or (leads.converted_at >= params.d_30 and leads.converted_at < params.d)
),

won_deals as (
    -- opportunities closed won in the window, with the ad platform of their lead's campaign
    select
        opportunities.amount,
        campaigns.platform
    from {{ source_schema }}.opportunities as opportunities
    cross join params
    inner join {{ source_schema }}.leads as leads on opportunities.lead_id = leads.lead_id
    inner join {{ source_schema }}.ad_campaigns as campaigns
        on leads.campaign_id = campaigns.campaign_id
    where
        opportunities.stage = 'closed_won'
        and opportunities.closed_at >= params.d_30
        and opportunities.closed_at < params.d
),

website as (
    select
        sum(wsd.sessions) as sessions,
        sum(wsd.bounced_sessions) as bounced_sessions,
        sum(wsd.converted_sessions) as converted_sessions
    from metrics_state.website_sessions_daily as wsd, params
    where wsd.activity_date >= params.d_30 and wsd.activity_date < params.d
),

new_customers as (
    select count(*) as new_customers
    from {{ source_schema }}.customers as customers, params
    where customers.created_at >= params.d_30 and customers.created_at < params.d
),

-- ---------------------------------------------------------------- spend & ROI
spend_totals as (
    select
        coalesce(sum(spend), 0) as total_spend,
        -- the last complete day, D-1: a daily flow, additive over days (metrics_api's MTD/QTD/YTD)
        coalesce(sum(spend) filter (where on_last_day), 0) as spend_1d,
        coalesce(sum(spend) filter (where platform = 'google_ads'), 0) as google_ads_spend,
        coalesce(sum(spend) filter (where platform = 'meta_ads'), 0) as meta_ads_spend,
        coalesce(sum(spend) filter (where platform = 'linkedin_ads'), 0) as linkedin_ads_spend,
        coalesce(
            sum(spend) filter (where platform not in ('google_ads', 'meta_ads', 'linkedin_ads')), 0
        ) as other_platforms_spend
    from spend
),

revenue_totals as (
    select
        coalesce(sum(amount) filter (where platform is not null), 0) as paid_revenue,
        coalesce(sum(amount) filter (where platform = 'google_ads'), 0) as google_ads_revenue,
        coalesce(sum(amount) filter (where platform = 'meta_ads'), 0) as meta_ads_revenue,
        coalesce(sum(amount) filter (where platform = 'linkedin_ads'), 0) as linkedin_ads_revenue
    from won_deals
),

-- ---------------------------------------------------------------- leads
lead_totals as (
    select
        count(*) filter (where leads.mql_at >= params.d_30 and leads.mql_at < params.d) as total_mqls,
        count(*) filter (where leads.mql_at >= params.d_90 and leads.mql_at < params.d) as mqls_90d,
        count(*) filter (
            where leads.mql_at >= params.d_90 and leads.mql_at < params.d and leads.converted_at < params.d
        ) as converted_mqls_90d,
        count(*) filter (
            where leads.converted_at >= params.d_30 and leads.converted_at < params.d
        ) as conversions_30d
    from leads, params
),

-- ---------------------------------------------------------------- attribution
conversion_touches as (
    -- every touchpoint up to the conversion of a lead converted in the last 30 days
    select
        leads.lead_id,
        touchpoints.channel
    from leads
    cross join params
    inner join {{ source_schema }}.attribution_touchpoints as touchpoints
        on leads.lead_id = touchpoints.lead_id
    where
        leads.converted_at >= params.d_30
        and leads.converted_at < params.d
        and touchpoints.touched_at <= leads.converted_at
),

touches_per_lead as (
    select
        lead_id,
        count(*) as touches
    from conversion_touches
    group by lead_id
),

channel_credit as (
    -- linear attribution: each conversion's 1 credit split equally over its touchpoints
    select
        conversion_touches.channel,
        -- 1/n carries ~20 digits, so 3 x 1/3 sums to 0.999...: round the noise away (10 decimals
        -- is far above it and far below any real difference) so equal credit ranks by name
        round(sum(1.0 / touches_per_lead.touches), 10) as credit
    from conversion_touches
    inner join touches_per_lead on conversion_touches.lead_id = touches_per_lead.lead_id
    group by conversion_touches.channel
),

ranked_channels as (
    select
        channel,
        credit,
        row_number() over (order by credit desc, channel asc) as channel_rank
    from channel_credit
),

attribution as (
    -- one row, also with no conversion (aggregates without group by)
    select
        (select sum(touches_per_lead.touches) from touches_per_lead) as touches,
        max(channel) filter (where channel_rank = 1) as top_channel_1,
        max(credit) filter (where channel_rank = 1) as top_credit_1,
        max(channel) filter (where channel_rank = 2) as top_channel_2,
        max(credit) filter (where channel_rank = 2) as top_credit_2,
        max(channel) filter (where channel_rank = 3) as top_channel_3,
        max(credit) filter (where channel_rank = 3) as top_credit_3
    from ranked_channels
),

final as (
    select
        params.d as metric_date,
        'all'::text as marketing_scope,
        spend_totals.total_spend as total_ad_spend_active,
        spend_totals.spend_1d as ad_spend_1d,
        spend_totals.google_ads_spend,
        round(
            (revenue_totals.google_ads_revenue - spend_totals.google_ads_spend)
            / nullif(spend_totals.google_ads_spend, 0),
            4
        ) as google_ads_roi,
        spend_totals.meta_ads_spend,
        round(
            (revenue_totals.meta_ads_revenue - spend_totals.meta_ads_spend)
            / nullif(spend_totals.meta_ads_spend, 0),
            4
        ) as meta_ads_roi,
        spend_totals.linkedin_ads_spend,
        round(
            (revenue_totals.linkedin_ads_revenue - spend_totals.linkedin_ads_spend)
            / nullif(spend_totals.linkedin_ads_spend, 0),
            4
        ) as linkedin_ads_roi,
        spend_totals.other_platforms_spend,
        round(
            (revenue_totals.paid_revenue - spend_totals.total_spend) / nullif(spend_totals.total_spend, 0),
            4
        ) as overall_roi,
        lead_totals.total_mqls,
        round(lead_totals.converted_mqls_90d::numeric / nullif(lead_totals.mqls_90d, 0), 4)
            as lead_conversion_rate,
        round(spend_totals.total_spend / nullif(lead_totals.total_mqls, 0), 2) as cost_per_mql,
        -- a converted lead without touchpoints counts 0 touches (and 0 credit)
        round(coalesce(attribution.touches, 0)::numeric / nullif(lead_totals.conversions_30d, 0), 2)
            as avg_touchpoints_to_conversion,
        attribution.top_channel_1,
        round(attribution.top_credit_1 / nullif(lead_totals.conversions_30d, 0), 4) as top_channel_1_share,
        attribution.top_channel_2,
        round(attribution.top_credit_2 / nullif(lead_totals.conversions_30d, 0), 4) as top_channel_2_share,
        attribution.top_channel_3,
        round(attribution.top_credit_3 / nullif(lead_totals.conversions_30d, 0), 4) as top_channel_3_share,
        coalesce(website.sessions, 0) as website_sessions,
        round(website.bounced_sessions::numeric / nullif(website.sessions, 0), 4) as bounce_rate,
        round(website.converted_sessions::numeric / nullif(website.sessions, 0), 4)
            as website_conversion_rate,
        round(spend_totals.total_spend / nullif(new_customers.new_customers, 0), 2)
            as customer_acquisition_cost
    from params
    cross join spend_totals
    cross join revenue_totals
    cross join website
    cross join new_customers
    cross join attribution
    cross join lead_totals
)

select * from final
