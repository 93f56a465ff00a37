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
--   raw.devices, raw.device_telemetry, and metrics_state.user_activity_daily (product
--   activity, refreshed for [D-30, D) before this query runs; its 30 days are read once,
--   grouped by user, and distinct features are the bits of the OR of the days' feature masks).
--   The user -> customer link is read from raw.users by this query, not from the state's
--   customer_id (frozen when a state day is built: a user who reaches raw.users after their
--   events would never count).
-- Arithmetic: every published value is one exact numeric fraction rounded once, at the end, to
--   the places the registry states (round() is half away from zero): no float and no rounded
--   intermediate, except that churn_risk_score and composite_success_score are computed from the
--   published (rounded) values of their row, as their formulas say. The numerator is cast to
--   numeric(60, 30), so the one division keeps 30 decimals and round() sees the exact value.
-- Definitions, units, rounding and tiers: include/registry/customer_success.yaml.

{% from "customer_success/_scores.sql" import scores %}
{% from "customer_success/_tickets.sql" import ticket_counts, in_ticket_window %}
with

params as (
    select
        {{ param('metric_date') }}::date as d,
        {{ param('metric_date') }}::date - 30 as d_30,
        {{ param('metric_date') }}::date - 7 as d_7,
        ({{ param('metric_date') }}::date - interval '1 month')::date as d_prev_month,
        3 as min_tickets_for_support   -- the support component of health needs >= 3 tickets in 30d
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
    -- one row per user with state in [D-30, D), from one pass over the state: active days in the
    -- window and in its last 7 days, and the features touched as one bit mask (ids 0..63); the
    -- user's customer is resolved now from raw.users (NULL for a user unknown to raw.users as
    -- of D); the state's own customer_id is not read
    select
        per_user.*,
        users.customer_id
    from (
        select
            uad.user_id,
            count(*) filter (where uad.events > 0) as active_days,
            count(*) filter (where uad.events > 0 and uad.activity_date >= params.d_7) as active_days_7d,
            bit_or(uad.feature_mask) as feature_mask,
            bool_or(cardinality(uad.other_feature_ids) > 0) as has_other_features
        from metrics_state.user_activity_daily as uad
        cross join params
        where uad.activity_date >= params.d_30 and uad.activity_date < params.d
        group by uad.user_id
    ) as per_user
    left join users on per_user.user_id = users.user_id
),

other_features_used as (
    -- features with ids outside 0..63 (not in the masks; none unless the sources have them)
    select distinct
        users.customer_id,
        feature.feature_id
    from metrics_state.user_activity_daily as uad
    cross join params
    inner join users on uad.user_id = users.user_id
    cross join lateral unnest(uad.other_feature_ids) as feature (feature_id)
    where
        uad.activity_date >= params.d_30 and uad.activity_date < params.d
        and cardinality(uad.other_feature_ids) > 0
        -- a one-time test: the state is read again only when some user has such a feature
        and exists (
            select 1 from activity
            where activity.has_other_features
        )
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
        coalesce(activity.active_days, 0) as active_days,
        coalesce(activity.active_days_7d, 0) as active_days_7d
    from seats
    cross join params
    left join activity on seats.user_id = activity.user_id
),

engagement as (
    select
        customer_id,
        count(*) as seat_count,
        count(*) filter (where is_activated) as activated_seats,
        count(*) filter (where active_days_7d > 0) as weekly_active_seats,
        sum(active_days) as active_seat_days
    from seat_activity
    group by customer_id
),

monthly_actives as (
    -- every active user counts, also users deactivated since (they were active in the window)
    select
        customer_id,
        count(*) as monthly_active_users
    from activity
    where active_days > 0 and customer_id is not null
    group by customer_id
),

-- ---------------------------------------------------------------- adoption
core_mask as (
    select coalesce(bit_or(1::bigint << feature_id) filter (where feature_id between 0 and 63), 0) as mask
    from core_features
),

mask_adoption as (
    -- distinct features of the customer's users: the bits of the OR of their masks
    select
        activity.customer_id,
        bit_count(bit_or(activity.feature_mask)::bit(64)) as features,
        bit_count((bit_or(activity.feature_mask) & min(core_mask.mask))::bit(64)) as core_features
    from activity
    cross join core_mask
    where activity.customer_id is not null
    group by activity.customer_id
),

other_adoption as (
    select
        other_features_used.customer_id,
        count(*) as features,
        count(core_features.feature_id) as core_features
    from other_features_used
    left join core_features on other_features_used.feature_id = core_features.feature_id
    group by other_features_used.customer_id
),

adoption as (
    select
        coalesce(mask_adoption.customer_id, other_adoption.customer_id) as customer_id,
        coalesce(mask_adoption.features, 0) + coalesce(other_adoption.features, 0) as features_adopted,
        coalesce(mask_adoption.core_features, 0) + coalesce(other_adoption.core_features, 0)
            as core_features_used
    from mask_adoption
    full outer join other_adoption on mask_adoption.customer_id = other_adoption.customer_id
),

-- ---------------------------------------------------------------- support
tickets as (
    select
        tickets.customer_id,
        {{ ticket_counts() }}
    from {{ source_schema }}.support_tickets as tickets, params
    where
        {{ in_ticket_window() }}
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
        sum(health_score) as device_health_sum
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

-- ---------------------------------------------------------------- per-customer exact counts
base as (
    select
        params.d as metric_date,
        customers.customer_id,
        customers.customer_name,
        customers.segment,
        plan_in_force.plan,
        params.min_tickets_for_support,
        coalesce(monthly_actives.monthly_active_users, 0) as monthly_active_users,
        coalesce(engagement.seat_count, 0) as seat_count,
        engagement.activated_seats,
        engagement.weekly_active_seats,
        engagement.active_seat_days,
        coalesce(adoption.features_adopted, 0) as features_adopted,
        coalesce(adoption.core_features_used, 0) as core_features_used,
        (select count(*) from core_features) as core_features_released,
        coalesce(tickets.support_tickets_30d, 0) as support_tickets_30d,
        coalesce(tickets.resolved_of_opened_30d, 0) as resolved_of_opened_30d,
        tickets.resolved_30d,
        tickets.resolution_seconds_30d,
        coalesce(device_health.active_device_count, 0) as active_device_count,
        device_health.device_health_sum,
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

{{ scores() }}

select * from final
