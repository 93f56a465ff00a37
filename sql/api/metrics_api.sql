-- entity.metrics_api rows of one domain for the metric_dates in `dates`, a month of them at a
-- time (the caller deletes them first, in the same transaction). The rules are in
-- sql/ops/30_metrics_api.sql.
-- Reads two temporary tables the caller fills and ANALYZEs just before (unified/api_target.sql,
-- api/target_kept.sql, api/prior.sql): api_target, the values of `dates` with their catalog
-- facts, and api_prior, the values of every date a comparison of `dates` points at. Their
-- statistics are exact, so every join below is planned on real row counts. Against the long
-- table directly, a day written since the last ANALYZE looked empty to the planner (with under
-- 100 days of history every date is in the statistics' most-common list, and a new one is
-- estimated at one row): one day of 148,000 values took from 0.4 s to six minutes depending on
-- autovacuum's timing. Period-to-date totals (additive metrics only) read, one entity and metric
-- at a time, the earlier dates from metrics_api (through its unique key metrics_api_key) and the
-- dates being built from api_target (through its index on the same keys).
-- api_table: metrics_api, or the month's partition when the caller writes a new month into it
-- before it attaches it (pipeline.build_api).
-- additive: whether the domain has an additive metric; without one the totals and their join
-- are left out (at SCALE=10 a month of customer success, which has none, spent 15 s of 89 s
-- joining 4.4 M rows with no totals).
{% from "api/_columns.sql" import api_columns, api_column_names %}
insert into entity.{{ api_table }} (
    {{ api_column_names() }}
)

with

valued as (
    -- each value with the five it compares with: one hash join per comparison, each on its
    -- exact key (api_prior holds at most one value per date, entity and metric), whose inner
    -- side is read for the dates it can match only (`first` and `last` are the first and last
    -- of `dates`); the caller turns merge joins off for this statement. This replaced one
    -- join on five keys a target row, then grouped back to one row (a sort of 22 M rows for
    -- a month of customer success at SCALE=10): its months' inserts took 30-58 s, 12-25 s this
    -- way (rolled back, minutes apart); one date's took 2.5 s either way
    select
        t.*,
        p1d.metric_value as value_1d_ago,
        p7d.metric_value as value_7d_ago,
        p1m.metric_value as value_1m_ago,
        p1y.metric_value as value_1y_ago,
        p364d.metric_value as value_364d_ago
    from api_target as t
    left join api_prior as p1d
        on
            t.metric_date - 1 = p1d.metric_date
            and t.entity_id = p1d.entity_id and t.metric_name = p1d.metric_name
            and p1d.metric_date between {{ param('first') }}::date - 1
            and {{ param('last') }}::date - 1
    left join api_prior as p7d
        on
            t.metric_date - 7 = p7d.metric_date
            and t.entity_id = p7d.entity_id and t.metric_name = p7d.metric_name
            and p7d.metric_date between {{ param('first') }}::date - 7
            and {{ param('last') }}::date - 7
    -- minus one month clamps to the month's last day: March 31 -> February 28 (29)
    left join api_prior as p1m
        on
            (t.metric_date - interval '1 month')::date = p1m.metric_date
            and t.entity_id = p1m.entity_id and t.metric_name = p1m.metric_name
            and p1m.metric_date between ({{ param('first') }}::date - interval '1 month')::date
            and ({{ param('last') }}::date - interval '1 month')::date
    -- February 29 -> February 28
    left join api_prior as p1y
        on
            (t.metric_date - interval '1 year')::date = p1y.metric_date
            and t.entity_id = p1y.entity_id and t.metric_name = p1y.metric_name
            and p1y.metric_date between ({{ param('first') }}::date - interval '1 year')::date
            and ({{ param('last') }}::date - interval '1 year')::date
    -- the same weekday a year before
    left join api_prior as p364d
        on
            t.metric_date - 364 = p364d.metric_date
            and t.entity_id = p364d.entity_id and t.metric_name = p364d.metric_name
            and p364d.metric_date between {{ param('first') }}::date - 364
            and {{ param('last') }}::date - 364
),

{% if additive %}
    additive_target as (
        -- the rows of the additive metrics, with the bounds of their periods (read from
        -- api_target twice, not through one CTE: the CTE was written out, every metric's rows
        -- with it, and scanned again for the few additive ones: 615 MB and 7.6 s for a month of
        -- customer success at SCALE=10, which has none)
        select
            t.domain,
            t.metric_date,
            t.entity_id,
            t.metric_name,
            t.metric_date - 1 as last_day,
            date_trunc('month', t.metric_date - 1)::date as month_start,
            date_trunc('quarter', t.metric_date - 1)::date as quarter_start,
            date_trunc('year', t.metric_date - 1)::date as year_start
        from api_target as t
        where t.additive
    ),

    totals as (
    -- period-to-date totals, for the additive metrics' rows only
        select
            t.metric_date,
            t.entity_id,
            t.metric_name,
            ptd.mtd_total,
            ptd.qtd_total,
            ptd.ytd_total,
            prior.prior_mtd_total,
            prior.prior_qtd_total,
            prior.prior_ytd_total
        from additive_target as t
        -- period to date, additive metrics only: the value of metric_date X covers day X-1
        left join lateral (
            select
                sum(x.metric_value) filter (where x.metric_date - 1 >= t.month_start) as mtd_total,
                sum(x.metric_value) filter (where x.metric_date - 1 >= t.quarter_start) as qtd_total,
                sum(x.metric_value) as ytd_total
            from (
                select
                    a.metric_date,
                    a.metric_value
                from entity.metrics_api as a
                where
                    a.domain = t.domain and a.metric_name = t.metric_name and a.entity_id = t.entity_id
                    and a.metric_date - 1 >= t.year_start and a.metric_date <= t.metric_date
                union all
                select
                    b.metric_date,
                    b.metric_value
                from pg_temp.api_target as b
                where
                    b.metric_name = t.metric_name and b.entity_id = t.entity_id
                    and b.metric_date - 1 >= t.year_start and b.metric_date <= t.metric_date
            ) as x
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
            from (
                select
                    a.metric_date,
                    a.metric_value
                from entity.metrics_api as a
                where
                    a.domain = t.domain and a.metric_name = t.metric_name and a.entity_id = t.entity_id
                    and a.metric_date - 1 >= (t.year_start - interval '1 year')::date
                    and a.metric_date - 1 <= (t.last_day - interval '1 month')::date
                union all
                select
                    b.metric_date,
                    b.metric_value
                from pg_temp.api_target as b
                where
                    b.metric_name = t.metric_name and b.entity_id = t.entity_id
                    and b.metric_date - 1 >= (t.year_start - interval '1 year')::date
                    and b.metric_date - 1 <= (t.last_day - interval '1 month')::date
            ) as x
        ) as prior on true
    ),

{% endif %}
compared as (
    select
        t.*,
        {% if additive %}
            totals.mtd_total,
            totals.qtd_total,
            totals.ytd_total,
            totals.prior_mtd_total,
            totals.prior_qtd_total,
            totals.prior_ytd_total
        {% else %}
            -- no additive metric in the domain: no totals, and no join that yields none
            null::numeric as mtd_total,
            null::numeric as qtd_total,
            null::numeric as ytd_total,
            null::numeric as prior_mtd_total,
            null::numeric as prior_qtd_total,
            null::numeric as prior_ytd_total
        {% endif %}
    from valued as t
    {% if additive %}
        -- its columns are selected above, under the same condition
        left join totals  -- noqa: ST11
            on
                t.metric_date = totals.metric_date and t.entity_id = totals.entity_id
                and t.metric_name = totals.metric_name
    {% endif %}
),

final as (
    select
        {{ api_columns() }}
    from compared
)

select * from final
