{#- metrics_api's columns in the order of its table, for an insert's column list. -#}
{% macro api_column_names() -%}
metric_date, domain, entity_type, entity_id, entity_name, metric_name, metric_value, unit,
    importance_tier, direction,
    value_1d_ago, change_1d, pct_change_1d, value_7d_ago, change_7d, pct_change_7d,
    value_1m_ago, change_1m, pct_change_1m, value_1y_ago, change_1y, pct_change_1y,
    value_364d_ago, change_364d, pct_change_364d,
    mtd_total, prior_mtd_total, qtd_total, prior_qtd_total, ytd_total, prior_ytd_total,
    is_improving
{%- endmacro %}

{#- metrics_api's columns from a value, its five prior values and its period totals (NULL
    where the domain has none): the changes, percent changes and the verdict, the same for
    every form that builds metrics_api (api/metrics_api.sql, unified/api_months.sql). -#}
{% macro api_columns() -%}
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
{%- endmacro %}
