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
-- api_schema, api_table: the month's table; d: the domain (registry).
{% from "api/_columns.sql" import api_columns, api_column_names %}
insert into {{ api_schema }}.{{ api_table }} (
    {{ api_column_names() }}
)

with

valued as (
    -- each row with its five prior rows (each join's inner side limited to the dates it can
    -- match, as in api/metrics_api.sql), unpivoted: one VALUES row per implemented metric
    select
        t.metric_date,
        '{{ d.name }}' as domain,
        '{{ d.entity_type }}' as entity_type,
        t.{{ d.id_column }}::text as entity_id,
        {% if d.name_column %}t.{{ d.name_column }}{% else %}null{% endif %}::text as entity_name,
        m.metric_name,
        m.metric_value,
        m.unit,
        m.importance_tier,
        c.direction,
        m.value_1d_ago,
        m.value_7d_ago,
        m.value_1m_ago,
        m.value_1y_ago,
        m.value_364d_ago,
        null::numeric as mtd_total,
        null::numeric as prior_mtd_total,
        null::numeric as qtd_total,
        null::numeric as prior_qtd_total,
        null::numeric as ytd_total,
        null::numeric as prior_ytd_total
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
    cross join lateral (
        values
        {% for m in d.unified %}
            (
                '{{ m.name }}', t.{{ m.name }}::numeric, '{{ m.tier }}', '{{ m.unit }}',
                p1d.{{ m.name }}::numeric, p7d.{{ m.name }}::numeric, p1m.{{ m.name }}::numeric,
                p1y.{{ m.name }}::numeric, p364d.{{ m.name }}::numeric
            ){% if not loop.last %},{% endif %}
        {% endfor %}
    ) as m (
        metric_name, metric_value, importance_tier, unit,
        value_1d_ago, value_7d_ago, value_1m_ago, value_1y_ago, value_364d_ago
    )
    inner join entity.metrics_catalog as c
        on c.domain = '{{ d.name }}' and m.metric_name = c.metric_name
    where t.metric_date = any({{ param('dates') }}::date []) and m.metric_value is not null
),

final as (
    select
        {{ api_columns() }}
    from valued
)

select * from final
