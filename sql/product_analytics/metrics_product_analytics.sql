-- metrics_product_analytics for one metric_date.
-- Grain: one row per metric_date for the whole product; product_scope is the constant 'all'.
--   The row exists even on a day without any activity (counts 0, ratios NULL).
-- As of: D (bind parameter `metric_date`) is the snapshot at 00:00 UTC on D; only rows before D
--   are seen. "Daily" = D-1 (the last complete day), "7d" = [D-7, D), "30d" = [D-30, D),
--   "prior 30d" = [D-60, D-30). A user is active on a day with >= 1 product event that day.
-- Sources: metrics_state.user_activity_daily only (built from raw.product_events,
--   raw.product_sessions and raw.users; refreshed for [D-60, D) before this query runs), so the
--   rolling windows never rescan raw events.
-- Definitions, units and tiers: include/registry/product_analytics.yaml.

with

params as (
    select
        {{ param('metric_date') }}::date as d,
        {{ param('metric_date') }}::date - 1 as d_1,
        {{ param('metric_date') }}::date - 7 as d_7,
        {{ param('metric_date') }}::date - 30 as d_30,
        {{ param('metric_date') }}::date - 60 as d_60,
        12 as power_user_min_days   -- power user: active on >= 12 of the 30 days
),

-- ---------------------------------------------------------------- import CTEs
activity as (
    -- one row per user per day with an event or a session, [D-60, D)
    select uad.*
    from metrics_state.user_activity_daily as uad, params
    where uad.activity_date >= params.d_60 and uad.activity_date < params.d
),

-- ---------------------------------------------------------------- per user
user_windows as (
    -- one row per user seen in [D-60, D): in which windows they were active
    select
        activity.user_id,
        count(*) filter (
            where activity.events > 0 and activity.activity_date >= params.d_1
        ) > 0 as active_1d,
        count(*) filter (
            where activity.events > 0 and activity.activity_date >= params.d_7
        ) > 0 as active_7d,
        count(*) filter (
            where activity.events > 0 and activity.activity_date >= params.d_30
        ) as active_days_30d,
        count(*) filter (
            where activity.events > 0 and activity.activity_date < params.d_30
        ) > 0 as active_prior_30d,
        coalesce(sum(activity.sessions) filter (where activity.activity_date >= params.d_30), 0)
            as sessions_30d
    from activity
    cross join params
    group by activity.user_id
),

user_features as (
    -- distinct features each user touched in [D-30, D)
    select
        activity.user_id,
        count(distinct feature.feature_id) as features_30d
    from activity
    cross join params
    cross join lateral unnest(activity.feature_ids) as feature (feature_id)
    where activity.activity_date >= params.d_30
    group by activity.user_id
),

-- ---------------------------------------------------------------- product totals
users_agg as (
    -- aggregates without group by: exactly one row, also when nobody was active
    select
        count(*) filter (where user_windows.active_1d) as daily_active_users,
        count(*) filter (where user_windows.active_7d) as weekly_active_users,
        count(*) filter (where user_windows.active_days_30d > 0) as monthly_active_users,
        count(*) filter (
            where user_windows.active_days_30d >= params.power_user_min_days
        ) as power_users,
        count(*) filter (where user_windows.active_prior_30d) as prior_active_users,
        count(*) filter (
            where user_windows.active_prior_30d and user_windows.active_days_30d > 0
        ) as retained_users,
        coalesce(sum(user_windows.sessions_30d) filter (where user_windows.active_days_30d > 0), 0)
            as active_user_sessions_30d,
        coalesce(
            sum(coalesce(user_features.features_30d, 0)) filter (
                where user_windows.active_days_30d > 0
            ),
            0
        ) as active_user_features_30d
    from user_windows
    cross join params
    left join user_features on user_windows.user_id = user_features.user_id
),

sessions_agg as (
    -- every session started in [D-30, D), whoever started it
    select
        coalesce(sum(activity.sessions), 0) as sessions_30d,
        coalesce(sum(activity.desktop_sessions), 0) as desktop_sessions_30d,
        coalesce(sum(activity.mobile_sessions), 0) as mobile_sessions_30d,
        coalesce(sum(activity.session_seconds), 0) as session_seconds_30d
    from activity
    cross join params
    where activity.activity_date >= params.d_30
),

final as (
    select
        params.d as metric_date,
        'all'::text as product_scope,
        users_agg.daily_active_users,
        users_agg.weekly_active_users,
        users_agg.monthly_active_users,
        round(
            users_agg.daily_active_users::numeric / nullif(users_agg.monthly_active_users, 0), 4
        ) as dau_mau_ratio,
        round(
            users_agg.weekly_active_users::numeric / nullif(users_agg.monthly_active_users, 0), 4
        ) as wau_mau_ratio,
        round(
            sessions_agg.session_seconds_30d::numeric / nullif(sessions_agg.sessions_30d, 0), 2
        ) as avg_session_duration,
        round(
            users_agg.active_user_sessions_30d::numeric / nullif(users_agg.monthly_active_users, 0),
            2
        ) as sessions_per_user,
        round(
            users_agg.active_user_features_30d::numeric / nullif(users_agg.monthly_active_users, 0),
            2
        ) as avg_features_used_per_user,
        users_agg.power_users,
        round(100.0 * users_agg.power_users / nullif(users_agg.monthly_active_users, 0), 2)
            as power_user_percentage,
        round(100.0 * sessions_agg.desktop_sessions_30d / nullif(sessions_agg.sessions_30d, 0), 2)
            as desktop_usage_pct,
        round(100.0 * sessions_agg.mobile_sessions_30d / nullif(sessions_agg.sessions_30d, 0), 2)
            as mobile_usage_pct,
        round(users_agg.retained_users::numeric / nullif(users_agg.prior_active_users, 0), 4)
            as avg_30d_retention_rate
    from params
    cross join users_agg
    cross join sessions_agg
)

select * from final
