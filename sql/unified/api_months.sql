-- The metrics_api rows of one domain for `dates`, the dates of one month with no partition yet,
-- read straight from the domain table, for a month built on a connection of its own beside the
-- other months of a range (pipeline._build_month, on the snapshot the fan-in exported). The
-- rules are api/metrics_api.sql's (sql/ops/30_metrics_api.sql): the same columns, the same
-- comparison dates, a prior value only where the domain has a non-NULL value.
-- Where api/metrics_api.sql joins each unified value with its five prior values (one row per
-- entity, metric and date: 4.4 million a month of customer success at SCALE=10, each joined five
-- times), this form joins the domain table's rows (one per entity and date, every metric in it:
-- 300,000 a month), then unpivots each row with its five prior rows. It reads prior values from
-- the domain table, not from metrics_api: the caller takes it only when every changed date is in
-- a new month (the changed dates of other months have no rows in metrics_api yet) and the
-- domain has no period totals; a date before the range has the same value in both (its slice
-- is current, or it would be one of the changed dates). The caller turns merge joins off.
-- d: the domain (registry); metrics: its unified metrics, in the order the database sorts their
-- names. A query, not an INSERT: the caller writes every domain's rows of the month with one
-- CREATE TABLE ... AS, which appends each row after the one before (an INSERT puts a row on an
-- earlier page with room for it now and then, and a key built over rows out of their order sorts
-- them all again: 12 s instead of 3 s for a month at SCALE=10, bench/).
{% from "api/_columns.sql" import api_columns %}
with

wide as materialized (
    -- each row of the dates with its five prior rows (each join's inner side limited to the
    -- dates it can match, as in api/metrics_api.sql), in the order of the table's key within
    -- one metric: (metric_date, entity_id)
    select
        t.metric_date,
        t.{{ d.id_column }}::text as entity_id,
        {% if d.name_column %}t.{{ d.name_column }}{% else %}null{% endif %}::text as entity_name,
        {% for m in d.unified %}
            t.{{ m.name }}::numeric as {{ m.name }},
            p1d.{{ m.name }}::numeric as {{ m.name }}__1d,
            p7d.{{ m.name }}::numeric as {{ m.name }}__7d,
            p1m.{{ m.name }}::numeric as {{ m.name }}__1m,
            p1y.{{ m.name }}::numeric as {{ m.name }}__1y,
            p364d.{{ m.name }}::numeric as {{ m.name }}__364d{% if not loop.last %},{% endif %}
        {% endfor %}
    from entity.{{ d.table }} as t
    left join entity.{{ d.table }} as p1d
        on
            t.metric_date - 1 = p1d.metric_date and t.{{ d.id_column }} = p1d.{{ d.id_column }}
            and p1d.metric_date between {{ param('first') }}::date - 1
            and {{ param('last') }}::date - 1
    left join entity.{{ d.table }} as p7d
        on
            t.metric_date - 7 = p7d.metric_date and t.{{ d.id_column }} = p7d.{{ d.id_column }}
            and p7d.metric_date between {{ param('first') }}::date - 7
            and {{ param('last') }}::date - 7
    -- minus one month clamps to the month's last day: March 31 -> February 28 (29)
    left join entity.{{ d.table }} as p1m
        on
            (t.metric_date - interval '1 month')::date = p1m.metric_date
            and t.{{ d.id_column }} = p1m.{{ d.id_column }}
            and p1m.metric_date between ({{ param('first') }}::date - interval '1 month')::date
            and ({{ param('last') }}::date - interval '1 month')::date
    -- February 29 -> February 28
    left join entity.{{ d.table }} as p1y
        on
            (t.metric_date - interval '1 year')::date = p1y.metric_date
            and t.{{ d.id_column }} = p1y.{{ d.id_column }}
            and p1y.metric_date between ({{ param('first') }}::date - interval '1 year')::date
            and ({{ param('last') }}::date - interval '1 year')::date
    -- the same weekday a year before
    left join entity.{{ d.table }} as p364d
        on
            t.metric_date - 364 = p364d.metric_date and t.{{ d.id_column }} = p364d.{{ d.id_column }}
            and p364d.metric_date between {{ param('first') }}::date - 364
            and {{ param('last') }}::date - 364
    where t.metric_date = any({{ param('dates') }}::date [])
    order by t.metric_date, t.{{ d.id_column }}::text
),

valued as (
    -- unpivoted one metric after the other, in the order of metric_name (`metrics`: the
    -- domain's, as the database sorts their names): the rows reach the table in its key's order
    {%- for m in metrics %}
        select
            w.metric_date,
            '{{ d.name }}' as domain,
            '{{ d.entity_type }}' as entity_type,
            w.entity_id,
            w.entity_name,
            '{{ m.name }}' as metric_name,
            w.{{ m.name }} as metric_value,
            '{{ m.unit }}' as unit,
            '{{ m.tier }}' as importance_tier,
            '{{ m.direction }}' as direction,
            w.{{ m.name }}__1d as value_1d_ago,
            w.{{ m.name }}__7d as value_7d_ago,
            w.{{ m.name }}__1m as value_1m_ago,
            w.{{ m.name }}__1y as value_1y_ago,
            w.{{ m.name }}__364d as value_364d_ago,
            null::numeric as mtd_total,
            null::numeric as prior_mtd_total,
            null::numeric as qtd_total,
            null::numeric as prior_qtd_total,
            null::numeric as ytd_total,
            null::numeric as prior_ytd_total
        from wide as w
        where w.{{ m.name }} is not null
        {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),

final as (
    select
        {{ api_columns() }}
    from valued
)

select * from final
