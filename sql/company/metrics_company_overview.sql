-- metrics_company_overview for one metric_date: the executive KPIs.
-- Grain: one row per metric_date for the whole company (company_scope = 'all').
-- As of: D (bind parameter `metric_date`) is the snapshot at 00:00 UTC on D. Each KPI aggregates
--   the published rows of D of a domain table (so it carries that domain's as-of rules); a domain
--   that has not published D leaves its KPIs NULL (counts 0). Company-wide win rate and coverage
--   read raw.opportunities with the sales domain's 90-day rule, for every rep.
-- Sources: entity.metrics_customer_success, entity.metrics_sales, entity.metrics_product_analytics,
--   entity.metrics_marketing, raw.opportunities. Definitions: include/registry/company.yaml.

with

params as (
    select
        {{ param('metric_date') }}::date as d,
        {{ param('metric_date') }}::date - 90 as d_90,
        ({{ param('metric_date') }}::date - interval '1 month')::date as d_1m
),

-- ---------------------------------------------------------------- import CTEs
customers as (
    select cs.*
    from entity.metrics_customer_success as cs, params
    where cs.metric_date = params.d
),

customers_month_ago as (
    select sum(cs.current_mrr) as total_mrr
    from entity.metrics_customer_success as cs, params
    where cs.metric_date = params.d_1m
    having count(*) > 0
),

reps as (
    select sales.*
    from entity.metrics_sales as sales, params
    where sales.metric_date = params.d
),

product as (
    select product.*
    from entity.metrics_product_analytics as product, params
    where product.metric_date = params.d
),

marketing as (
    select marketing.*
    from entity.metrics_marketing as marketing, params
    where marketing.metric_date = params.d
),

closed_90d as (
    select
        count(*) filter (where opp.stage = 'closed_won') as won,
        count(*) filter (where opp.stage = 'closed_lost') as lost,
        sum(opp.amount) filter (where opp.stage = 'closed_won') as won_amount
    from {{ source_schema }}.opportunities as opp, params
    where opp.closed_at >= params.d_90 and opp.closed_at < params.d
),

-- ---------------------------------------------------------------- logic
customer_kpis as (
    select
        count(*) as active_customers,
        case when count(*) > 0 then coalesce(sum(current_mrr), 0) end as total_mrr,
        round(avg(customer_health_score), 2) as avg_health_score,
        count(*) filter (where customer_health_score >= 80) as healthy_customers,
        count(*) filter (
            where customer_health_score >= 60 and customer_health_score < 80
        ) as stable_customers,
        -- the guide's CASE puts a NULL score in its ELSE: 'At Risk'
        count(*) filter (
            where customer_health_score < 60 or customer_health_score is null
        ) as at_risk_customers,
        case when count(*) > 0 then coalesce(sum(current_mrr) filter (
                    where customer_health_score < 60 or customer_health_score is null
                ), 0)
        end as mrr_at_risk
    from customers
),

sales_kpis as (
    select
        case when count(*) > 0 then coalesce(sum(total_pipeline_value), 0) end as total_pipeline_value,
        case when count(*) > 0 then coalesce(sum(revenue_closed_mtd), 0) end as revenue_closed_mtd
    from reps
),

final as (
    select
        params.d as metric_date,
        'all'::text as company_scope,
        customer_kpis.total_mrr,
        round(
            100 * (customer_kpis.total_mrr - customers_month_ago.total_mrr)
            / nullif(customers_month_ago.total_mrr, 0), 2
        ) as mrr_mom_growth_pct,
        customer_kpis.active_customers,
        customer_kpis.avg_health_score,
        customer_kpis.healthy_customers,
        customer_kpis.stable_customers,
        customer_kpis.at_risk_customers,
        customer_kpis.mrr_at_risk,
        sales_kpis.total_pipeline_value,
        round(sales_kpis.total_pipeline_value / nullif(closed_90d.won_amount, 0), 4)
            as pipeline_coverage_ratio,
        round(closed_90d.won::numeric / nullif(closed_90d.won + closed_90d.lost, 0), 4) as win_rate,
        sales_kpis.revenue_closed_mtd,
        product.daily_active_users,
        product.monthly_active_users,
        product.dau_mau_ratio,
        marketing.total_ad_spend_active as total_ad_spend,
        marketing.overall_roi,
        marketing.total_mqls,
        marketing.customer_acquisition_cost
    from params
    cross join customer_kpis
    cross join sales_kpis
    cross join closed_90d
    left join customers_month_ago on true
    left join product on true
    left join marketing on true
)

select * from final
