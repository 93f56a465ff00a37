-- entity.metrics_api rows of one domain for the metric_dates in `dates` (the caller deletes them
-- first, in the same transaction). Reads metrics_unified_domains (values, comparisons) and
-- entity.metrics_catalog (direction, additive). The rules are in sql/ops/30_metrics_api.sql.
-- The comparisons are window functions over each (entity, metric) series of the dates in
-- `series_dates` (the dates to build and every date they compare with, read by the primary
-- key), one frame per offset: `range between interval '7 days' preceding and interval '7 days'
-- preceding` holds exactly the row of metric_date - 7 (none: NULL), and '1 month' / '1 year' are
-- PostgreSQL's date - interval (March 31 -> February 28/29). One sort, no join for the planner
-- to get wrong: as five lookups, a freshly loaded table's statistics once made it scan every
-- entity of a metric for each lookup (12 s for one day of 14,000 values).
insert into entity.metrics_api (
    metric_date, domain, entity_type, entity_id, entity_name, metric_name, metric_value, unit,
    importance_tier, direction,
    value_1d_ago, change_1d, pct_change_1d, value_7d_ago, change_7d, pct_change_7d,
    value_1m_ago, change_1m, pct_change_1m, value_1y_ago, change_1y, pct_change_1y,
    value_364d_ago, change_364d, pct_change_364d,
    mtd_total, prior_mtd_total, qtd_total, prior_qtd_total, ytd_total, prior_ytd_total,
    is_improving
)

with

series as (
    select
        u.*,
        first_value(u.metric_value) over (
            w range between interval '1 day' preceding and interval '1 day' preceding
        ) as value_1d_ago,
        first_value(u.metric_value) over (
            w range between interval '7 days' preceding and interval '7 days' preceding
        ) as value_7d_ago,
        -- minus one month clamps to the month's last day: March 31 -> February 28 (29)
        first_value(u.metric_value) over (
            w range between interval '1 month' preceding and interval '1 month' preceding
        ) as value_1m_ago,
        -- February 29 -> February 28
        first_value(u.metric_value) over (
            w range between interval '1 year' preceding and interval '1 year' preceding
        ) as value_1y_ago,
        -- the same weekday a year before
        first_value(u.metric_value) over (
            w range between interval '364 days' preceding and interval '364 days' preceding
        ) as value_364d_ago
    from entity.metrics_unified_domains as u
    where
        u.domain = {{ param('domain') }}
        and u.metric_date = any({{ param('series_dates') }}::date[])
    window w as (partition by u.entity_id, u.metric_name order by u.metric_date)
),

target as (
    select
        s.*,
        c.direction,
        c.additive,
        s.metric_date - 1 as last_day,
        date_trunc('month', s.metric_date - 1)::date as month_start,
        date_trunc('quarter', s.metric_date - 1)::date as quarter_start,
        date_trunc('year', s.metric_date - 1)::date as year_start
    from series as s
    inner join entity.metrics_catalog as c
        on s.domain = c.domain and s.metric_name = c.metric_name
    where s.metric_date = any({{ param('dates') }}::date[])
),

compared as (
    select
        t.*,
        ptd.mtd_total,
        ptd.qtd_total,
        ptd.ytd_total,
        prior.prior_mtd_total,
        prior.prior_qtd_total,
        prior.prior_ytd_total
    from target as t
    -- period to date, additive metrics only: the value of metric_date X covers day X-1
    left join lateral (
        select
            sum(x.metric_value) filter (where x.metric_date - 1 >= t.month_start) as mtd_total,
            sum(x.metric_value) filter (where x.metric_date - 1 >= t.quarter_start) as qtd_total,
            sum(x.metric_value) as ytd_total
        from entity.metrics_unified_domains as x
        -- t.additive first: a one-time filter, so other metrics never scan their history
        where
            t.additive
            and x.domain = t.domain and x.metric_name = t.metric_name and x.entity_id = t.entity_id
            and x.metric_date - 1 >= t.year_start and x.metric_date <= t.metric_date
    ) as ptd on true
    -- the previous period through the same day (clamped to that period's month end)
    left join lateral (
        select
            sum(x.metric_value) filter (
                where x.metric_date - 1 >= (t.month_start - interval '1 month')::date
                and x.metric_date - 1 <= (t.last_day - interval '1 month')::date
            ) as prior_mtd_total,
            sum(x.metric_value) filter (
                where x.metric_date - 1 >= (t.quarter_start - interval '3 months')::date
                and x.metric_date - 1 <= (t.last_day - interval '3 months')::date
            ) as prior_qtd_total,
            sum(x.metric_value) filter (
                where x.metric_date - 1 <= (t.last_day - interval '1 year')::date
            ) as prior_ytd_total
        from entity.metrics_unified_domains as x
        where
            t.additive
            and x.domain = t.domain and x.metric_name = t.metric_name and x.entity_id = t.entity_id
            and x.metric_date - 1 >= (t.year_start - interval '1 year')::date
            and x.metric_date - 1 <= (t.last_day - interval '1 month')::date
    ) as prior on true
),

final as (
    select
        metric_date,
        domain,
        entity_type,
        entity_id,
        entity_name,
        metric_name,
        metric_value,
        unit,
        importance_tier,
        direction,
        value_1d_ago,
        metric_value - value_1d_ago as change_1d,
        round(100 * (metric_value - value_1d_ago) / nullif(abs(value_1d_ago), 0), 2) as pct_change_1d,
        value_7d_ago,
        metric_value - value_7d_ago as change_7d,
        round(100 * (metric_value - value_7d_ago) / nullif(abs(value_7d_ago), 0), 2) as pct_change_7d,
        value_1m_ago,
        metric_value - value_1m_ago as change_1m,
        round(100 * (metric_value - value_1m_ago) / nullif(abs(value_1m_ago), 0), 2) as pct_change_1m,
        value_1y_ago,
        metric_value - value_1y_ago as change_1y,
        round(100 * (metric_value - value_1y_ago) / nullif(abs(value_1y_ago), 0), 2) as pct_change_1y,
        value_364d_ago,
        metric_value - value_364d_ago as change_364d,
        round(100 * (metric_value - value_364d_ago) / nullif(abs(value_364d_ago), 0), 2) as pct_change_364d,
        mtd_total,
        prior_mtd_total,
        qtd_total,
        prior_qtd_total,
        ytd_total,
        prior_ytd_total,
        case
            when direction = 'neutral' or value_1d_ago is null or metric_value = value_1d_ago then null
            when direction = 'higher_is_better' then metric_value > value_1d_ago
            else metric_value < value_1d_ago
        end as is_improving
    from compared
)

select * from final
