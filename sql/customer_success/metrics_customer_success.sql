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

select * from final
