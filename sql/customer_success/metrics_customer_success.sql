-- metrics_customer_success for one metric_date.
-- Grain: one row per active customer per metric_date (active: created before D, not churned
-- before D).
-- As of: D (bind parameter `metric_date`) is the snapshot at 00:00 UTC on D; only rows before D are seen.
--   "30d" windows cover [D-30, D); device activity covers [D-7, D). A subscription covers the
--   days [start_date, end_date) and is in force at the snapshot when it covers D-1:
--   start_date < D and (end_date null or end_date >= D). "D - 1 month" is PostgreSQL's
--   `date - interval '1 month'` (March 31 -> February 28/29).
--   History: plan is the plan of the subscription in force on D; customer_name and segment are
--   today's raw.customers values (the sources keep no history of them).
-- Sources: raw.customers, raw.subscriptions, raw.users, raw.features, raw.support_tickets,
--   raw.devices, raw.device_telemetry, and metrics_state.user_activity_daily (product activity,
--   refreshed for [D-30, D) before this query runs). The user -> customer link is read from
--   raw.users by this query, not from the state's customer_id (frozen when a state day is built:
--   a user who reaches raw.users after their events would never count).
-- Definitions, units and tiers: include/registry/customer_success.yaml.

with

params as (
    select
        {{ param('metric_date') }}::date as d,
        {{ param('metric_date') }}::date - 30 as d_30,
        {{ param('metric_date') }}::date - 7 as d_7,
        ({{ param('metric_date') }}::date - interval '1 month')::date as d_prev_month
),

-- ---------------------------------------------------------------- import CTEs
customers as (
    select customers.*
    from {{ source_schema }}.customers as customers, params
    where
        customers.created_at < params.d
        and (customers.churned_at is null or customers.churned_at >= params.d)
),

users as (
    -- users as of D: created before D (customer_id is today's value: raw.users keeps no history)
    select users.*
    from {{ source_schema }}.users as users, params
    where users.created_at < params.d
),

seats as (
    -- a seat is a user created before D and not deactivated before D
    select users.*
    from users, params
    where users.deactivated_at is null or users.deactivated_at >= params.d
),

activity as (
    -- state rows of [D-30, D) with the user's customer resolved now from raw.users (NULL for a
    -- user unknown to raw.users as of D); the state's own customer_id is not read
    select
        uad.activity_date,
        uad.user_id,
        users.customer_id,
        uad.events,
        uad.feature_ids
    from metrics_state.user_activity_daily as uad
    cross join params
    left join users on uad.user_id = users.user_id
    where uad.activity_date >= params.d_30 and uad.activity_date < params.d
),

core_features as (
    select features.feature_id
    from {{ source_schema }}.features as features, params
    where features.is_core and features.released_at < params.d
),

subscriptions as (
    -- every subscription that started before D (the only ones in force on D or D - 1 month)
    select subscriptions.*
    from {{ source_schema }}.subscriptions as subscriptions, params
    where subscriptions.start_date < params.d
),

-- ---------------------------------------------------------------- revenue and plan
mrr as (
    select
        subscriptions.customer_id,
        sum(subscriptions.mrr) filter (
            where subscriptions.end_date is null or subscriptions.end_date >= params.d
        ) as current_mrr,
        sum(subscriptions.mrr) filter (
            where subscriptions.start_date < params.d_prev_month
            and (subscriptions.end_date is null or subscriptions.end_date >= params.d_prev_month)
        ) as previous_month_mrr
    from subscriptions, params
    group by subscriptions.customer_id
),

plan_in_force as (
    -- the plan of the subscription in force on D; with overlapping subscriptions the one that
    -- started last (then the higher mrr, then the higher subscription_id)
    select distinct on (subscriptions.customer_id)
        subscriptions.customer_id,
        subscriptions.plan
    from subscriptions, params
    where subscriptions.end_date is null or subscriptions.end_date >= params.d
    order by
        subscriptions.customer_id asc, subscriptions.start_date desc, subscriptions.mrr desc,
        subscriptions.subscription_id desc
),

-- ---------------------------------------------------------------- engagement
seat_activity as (
    -- one row per seat: on how many of the last 30 days it was active
    select
        seats.customer_id,
        seats.user_id,
        seats.activated_at < params.d as is_activated,
        count(activity.activity_date) filter (where activity.events > 0) as active_days,
        count(activity.activity_date) filter (
            where activity.events > 0 and activity.activity_date >= params.d_7
        ) as active_days_7d
    from seats
    cross join params
    left join activity on seats.user_id = activity.user_id
    group by seats.customer_id, seats.user_id, seats.activated_at, params.d
),

engagement as (
    select
        customer_id,
        count(*) as seat_count,
        count(*) filter (where is_activated) as activated_seats,
        count(*) filter (where active_days_7d > 0) as weekly_active_seats,
        -- share of the last 30 days each seat was active, averaged over seats, as 0-100
        avg(100.0 * active_days / 30) as avg_engagement_score
    from seat_activity
    group by customer_id
),

monthly_actives as (
    -- every active user counts, also users deactivated since (they were active in the window)
    select
        customer_id,
        count(distinct user_id) as monthly_active_users
    from activity
    where events > 0 and customer_id is not null
    group by customer_id
),

-- ---------------------------------------------------------------- adoption
features_used as (
    select distinct
        activity.customer_id,
        feature.feature_id
    from activity
    cross join lateral unnest(activity.feature_ids) as feature (feature_id)
    where activity.customer_id is not null
),

adoption as (
    select
        features_used.customer_id,
        count(*) as features_adopted,
        count(core_features.feature_id) as core_features_used
    from features_used
    left join core_features on features_used.feature_id = core_features.feature_id
    group by features_used.customer_id
),

-- ---------------------------------------------------------------- support
tickets as (
    select
        tickets.customer_id,
        count(*) filter (where tickets.created_at >= params.d_30) as support_tickets_30d,
        count(*) filter (
            where tickets.created_at >= params.d_30 and tickets.resolved_at < params.d
        ) as resolved_of_opened_30d,
        avg(extract(epoch from tickets.resolved_at - tickets.created_at) / 3600.0) filter (
            where tickets.resolved_at >= params.d_30 and tickets.resolved_at < params.d
        ) as avg_ticket_resolution_hours
    from {{ source_schema }}.support_tickets as tickets, params
    where
        tickets.created_at < params.d
        and (tickets.created_at >= params.d_30 or tickets.resolved_at >= params.d_30)
    group by tickets.customer_id
),

-- ---------------------------------------------------------------- operations
devices_in_service as (
    select
        devices.device_id,
        devices.customer_id
    from {{ source_schema }}.devices as devices, params
    where
        devices.registered_at < params.d
        and (devices.decommissioned_at is null or devices.decommissioned_at >= params.d)
),

latest_readings as (
    -- the latest reading of each device in service within the last 7 days
    select distinct on (telemetry.device_id)
        devices_in_service.customer_id,
        telemetry.health_score
    from {{ source_schema }}.device_telemetry as telemetry
    inner join devices_in_service on telemetry.device_id = devices_in_service.device_id
    cross join params
    where telemetry.reading_date >= params.d_7 and telemetry.reading_date < params.d
    order by telemetry.device_id asc, telemetry.reading_date desc
),

device_health as (
    select
        customer_id,
        count(*) as active_device_count,
        avg(health_score) as avg_device_health_score
    from latest_readings
    group by customer_id
),

device_volume as (
    select
        devices.customer_id,
        sum(telemetry.volume_processed) as volume_processed_30d
    from {{ source_schema }}.device_telemetry as telemetry
    inner join {{ source_schema }}.devices as devices on telemetry.device_id = devices.device_id
    cross join params
    where telemetry.reading_date >= params.d_30 and telemetry.reading_date < params.d
    group by devices.customer_id
),

-- ---------------------------------------------------------------- per-customer base metrics
base as (
    select
        params.d as metric_date,
        customers.customer_id,
        customers.customer_name,
        customers.segment,
        plan_in_force.plan,
        coalesce(monthly_actives.monthly_active_users, 0) as monthly_active_users,
        engagement.seat_count,
        engagement.weekly_active_seats,
        engagement.activated_seats::numeric / nullif(engagement.seat_count, 0)
            as user_activation_rate,
        engagement.avg_engagement_score,
        coalesce(adoption.features_adopted, 0) as features_adopted,
        coalesce(adoption.core_features_used, 0)::numeric
        / nullif((select count(*) from core_features), 0) as core_feature_adoption_rate,
        coalesce(tickets.support_tickets_30d, 0) as support_tickets_30d,
        tickets.resolved_of_opened_30d::numeric / nullif(tickets.support_tickets_30d, 0)
            as ticket_resolution_rate,
        tickets.avg_ticket_resolution_hours,
        coalesce(device_health.active_device_count, 0) as active_device_count,
        device_health.avg_device_health_score,
        coalesce(device_volume.volume_processed_30d, 0) as volume_processed_30d,
        coalesce(mrr.current_mrr, 0.00) as current_mrr,
        nullif(mrr.previous_month_mrr, 0) as previous_month_mrr
    from customers
    cross join params
    left join plan_in_force on customers.customer_id = plan_in_force.customer_id
    left join monthly_actives on customers.customer_id = monthly_actives.customer_id
    left join engagement on customers.customer_id = engagement.customer_id
    left join adoption on customers.customer_id = adoption.customer_id
    left join tickets on customers.customer_id = tickets.customer_id
    left join device_health on customers.customer_id = device_health.customer_id
    left join device_volume on customers.customer_id = device_volume.customer_id
    left join mrr on customers.customer_id = mrr.customer_id
),

-- ---------------------------------------------------------------- composite scores
health_components as (
    select
        base.*,
        -- engagement: share of today's seats active in the last 7 days
        case
            when base.seat_count > 0
                then 100.0 * base.weekly_active_seats / base.seat_count
        end as c_engagement,
        100.0 * base.core_feature_adoption_rate as c_adoption,
        100.0 * base.ticket_resolution_rate as c_support,
        base.avg_device_health_score as c_devices
    from base
),

health as (
    select
        health_components.*,
        -- health: weighted mean of available components (0.35, 0.25, 0.20, 0.20), rescaled
        (
            coalesce(0.35 * health_components.c_engagement, 0)
            + coalesce(0.25 * health_components.c_adoption, 0)
            + coalesce(0.20 * health_components.c_support, 0)
            + coalesce(0.20 * health_components.c_devices, 0)
        ) / nullif(
            case when health_components.c_engagement is null then 0 else 0.35 end
            + case when health_components.c_adoption is null then 0 else 0.25 end
            + case when health_components.c_support is null then 0 else 0.20 end
            + case when health_components.c_devices is null then 0 else 0.20 end,
            0
        ) as health_raw,
        -- MRR contraction month over month, 0-100; null without last month's MRR
        -- (explicit case: greatest() and least() would turn the null into 0 or 100)
        case
            when health_components.previous_month_mrr is not null
                then least(
                        100.0,
                        100.0
                        * greatest(0, health_components.previous_month_mrr - health_components.current_mrr)
                        / health_components.previous_month_mrr
                    )
        end as c_contraction
    from health_components
),

final as (
    select
        metric_date,
        customer_id,
        customer_name,
        segment,
        plan,
        round(health_raw, 2) as customer_health_score,
        -- churn risk: weighted mean of (100 - health) (0.7) and MRR contraction (0.3), rescaled
        round(
            (coalesce(0.7 * (100 - health_raw), 0) + coalesce(0.3 * c_contraction, 0))
            / nullif(
                case when health_raw is null then 0 else 0.7 end
                + case when c_contraction is null or health_raw is null then 0 else 0.3 end,
                0
            ),
            2
        ) as churn_risk_score,
        -- success: weighted mean of health (0.5), engagement (0.25), activation (0.25), rescaled
        round(
            (
                coalesce(0.5 * health_raw, 0) + coalesce(0.25 * avg_engagement_score, 0)
                + coalesce(0.25 * 100 * user_activation_rate, 0)
            ) / nullif(
                case when health_raw is null then 0 else 0.5 end
                + case when avg_engagement_score is null then 0 else 0.25 end
                + case when user_activation_rate is null then 0 else 0.25 end,
                0
            ),
            2
        ) as composite_success_score,
        monthly_active_users,
        round(user_activation_rate, 4) as user_activation_rate,
        round(avg_engagement_score, 2) as avg_engagement_score,
        features_adopted,
        round(core_feature_adoption_rate, 4) as core_feature_adoption_rate,
        support_tickets_30d,
        round(ticket_resolution_rate, 4) as ticket_resolution_rate,
        round(avg_ticket_resolution_hours, 2) as avg_ticket_resolution_hours,
        active_device_count,
        round(avg_device_health_score, 2) as avg_device_health_score,
        volume_processed_30d,
        current_mrr,
        previous_month_mrr
    from health
)

select * from final
