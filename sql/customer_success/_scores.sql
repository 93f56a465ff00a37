{#- The scores of customer success from its per-customer exact counts: the CTEs from
    health_components to final, after a CTE named `base` (one row per metric_date and customer;
    see metrics_customer_success.sql). Shared by the per-date and the range form, so both publish
    the same formulas. -#}
{% macro scores() -%}
-- ---------------------------------------------------------------- health, exactly
health_components as (
    -- each health component as an exact fraction n / d on 0-100 with its weight w; a component
    -- without evidence has w = 0, n = 0, d = 1 (left out, the other weights rescaled)
    select
        base.*,
        -- engagement: seats active in [D-7, D) / seats; needs a seat
        case when base.seat_count > 0 then 0.35 else 0 end as w_engagement,
        case when base.seat_count > 0 then 100 * base.weekly_active_seats else 0 end as n_engagement,
        case when base.seat_count > 0 then base.seat_count else 1 end as d_engagement,
        -- adoption: core features used / released; needs a seat (no users: nothing to adopt)
        -- and a released core feature
        case when base.seat_count > 0 and base.core_features_released > 0 then 0.25 else 0 end
            as w_adoption,
        case
            when base.seat_count > 0 and base.core_features_released > 0
                then 100 * base.core_features_used
            else 0
        end as n_adoption,
        case
            when base.seat_count > 0 and base.core_features_released > 0
                then base.core_features_released
            else 1
        end as d_adoption,
        -- support: tickets of [D-30, D) resolved by D / tickets; needs min_tickets_for_support
        case when base.support_tickets_30d >= base.min_tickets_for_support then 0.20 else 0 end
            as w_support,
        case
            when base.support_tickets_30d >= base.min_tickets_for_support
                then 100 * base.resolved_of_opened_30d
            else 0
        end as n_support,
        case
            when base.support_tickets_30d >= base.min_tickets_for_support
                then base.support_tickets_30d
            else 1
        end as d_support,
        -- devices: mean latest health of active devices; needs an active device
        case when base.active_device_count > 0 then 0.20 else 0 end as w_devices,
        coalesce(base.device_health_sum, 0) as n_devices,
        greatest(base.active_device_count, 1) as d_devices
    from base
),

health as (
    -- weighted mean of the available components = one fraction over their common denominator:
    -- sum of w_i x n_i x (the other d_j) / (sum of w_i x all d_j)
    select
        *,
        round(
            (
                w_engagement * n_engagement * d_adoption * d_support * d_devices
                + w_adoption * n_adoption * d_engagement * d_support * d_devices
                + w_support * n_support * d_engagement * d_adoption * d_devices
                + w_devices * n_devices * d_engagement * d_adoption * d_support
            )::numeric(60, 30)
            / nullif(
                (w_engagement + w_adoption + w_support + w_devices)
                * d_engagement * d_adoption * d_support * d_devices,
                0
            ),
            2
        ) as customer_health_score,
        round(activated_seats::numeric(60, 30) / nullif(seat_count, 0), 4) as user_activation_rate,
        -- mean over seats of 100 x active days / 30 = 100 x all seats' active days / (30 x seats)
        round((100 * active_seat_days)::numeric(60, 30) / nullif(30 * seat_count, 0), 2)
            as avg_engagement_score
    from health_components
),

-- ---------------------------------------------------------------- scores from published values
risk_components as (
    -- MRR contraction month over month as an exact fraction n / d on 0-100 (at most 100) with
    -- weight 0.3; weight 0 without last month's MRR
    select
        *,
        case when previous_month_mrr is not null then 0.3 else 0 end as w_contraction,
        case
            when previous_month_mrr is not null
                then 100 * least(previous_month_mrr, greatest(0, previous_month_mrr - current_mrr))
            else 0
        end as n_contraction,
        coalesce(previous_month_mrr, 1) as d_contraction
    from health
),

final as (
    select
        metric_date,
        customer_id,
        customer_name,
        segment,
        plan,
        customer_health_score,
        -- churn risk: weighted mean of (100 - published health) (0.7) and contraction (0.3);
        -- NULL with a NULL health
        round(
            (0.7 * (100 - customer_health_score) * d_contraction + w_contraction * n_contraction)
            ::numeric(60, 30)
            / ((0.7 + w_contraction) * d_contraction),
            2
        ) as churn_risk_score,
        -- success: weighted mean of the published health (0.5), avg_engagement_score (0.25) and
        -- 100 x user_activation_rate (0.25), missing ones left out and the weights rescaled
        round(
            (
                coalesce(0.5 * customer_health_score, 0) + coalesce(0.25 * avg_engagement_score, 0)
                + coalesce(0.25 * 100 * user_activation_rate, 0)
            )::numeric(60, 30)
            / nullif(
                case when customer_health_score is null then 0 else 0.5 end
                + case when avg_engagement_score is null then 0 else 0.25 end
                + case when user_activation_rate is null then 0 else 0.25 end,
                0
            ),
            2
        ) as composite_success_score,
        monthly_active_users,
        user_activation_rate,
        avg_engagement_score,
        features_adopted,
        round(core_features_used::numeric(60, 30) / nullif(core_features_released, 0), 4)
            as core_feature_adoption_rate,
        support_tickets_30d,
        round(resolved_of_opened_30d::numeric(60, 30) / nullif(support_tickets_30d, 0), 4)
            as ticket_resolution_rate,
        -- mean resolution time = total seconds / (3600 x tickets), exact
        round(resolution_seconds_30d::numeric(60, 30) / nullif(3600 * resolved_30d, 0), 2)
            as avg_ticket_resolution_hours,
        active_device_count,
        round(device_health_sum::numeric(60, 30) / nullif(active_device_count, 0), 2)
            as avg_device_health_score,
        volume_processed_30d,
        current_mrr,
        previous_month_mrr
    from risk_components
)
{%- endmacro %}
