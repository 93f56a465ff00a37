{#- Customer success's support counts of the 30 days before metric_date `params.d`
    (`params.d_30` = d - 30) for the rows of `tickets`: the aggregates, and the tickets that can
    count (created before d, and created or resolved in the window). Shared by the per-date and
    the range form, so both publish the same as-of rules. -#}
{% macro ticket_counts() -%}
count(*) filter (where tickets.created_at >= params.d_30) as support_tickets_30d,
        count(*) filter (
            where tickets.created_at >= params.d_30 and tickets.resolved_at < params.d
        ) as resolved_of_opened_30d,
        count(*) filter (
            where tickets.resolved_at >= params.d_30 and tickets.resolved_at < params.d
        ) as resolved_30d,
        -- exact seconds (extract(epoch ...) is numeric): divided once, in final
        sum(extract(epoch from tickets.resolved_at - tickets.created_at)) filter (
            where tickets.resolved_at >= params.d_30 and tickets.resolved_at < params.d
        ) as resolution_seconds_30d
{%- endmacro %}

{% macro in_ticket_window() -%}
tickets.created_at < params.d
            and (tickets.created_at >= params.d_30 or tickets.resolved_at >= params.d_30)
{%- endmacro %}
