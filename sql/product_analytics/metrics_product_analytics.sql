-- metrics_product_analytics for one metric_date.
-- Grain: one row per metric_date for the whole product; product_scope is the constant 'all'.
--   The row exists even on a day without any activity (counts 0, ratios NULL).
-- As of: D (bind parameter `metric_date`) is the snapshot at 00:00 UTC on D; only rows before D
--   are seen. "Daily" = D-1 (the last complete day), "7d" = [D-7, D), "30d" = [D-30, D),
--   "prior 30d" = [D-60, D-30). A user is active on a day with >= 1 product event that day.
-- Sources: metrics_state.user_activity_daily only (built from raw.product_events,
--   raw.product_sessions and raw.users; refreshed for [D-60, D) before this query runs), so the
--   rolling windows never rescan raw events; its 60 days are read once, grouped by user, and a
--   user's distinct features are the bits of the OR of the days' feature masks.
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

-- ---------------------------------------------------------------- per user
user_windows as (
    -- one row per user seen in [D-60, D), in one pass over the state: in which windows they were
    -- active, their sessions of the last 30 days, and their features as one bit mask
    select
        uad.user_id,
        count(*) filter (where uad.events > 0 and uad.activity_date >= params.d_1) > 0 as active_1d,
        count(*) filter (where uad.events > 0 and uad.activity_date >= params.d_7) > 0 as active_7d,
        count(*) filter (where uad.events > 0 and uad.activity_date >= params.d_30) as active_days_30d,
        count(*) filter (where uad.events > 0 and uad.activity_date < params.d_30) > 0
            as active_prior_30d,
        coalesce(sum(uad.sessions) filter (where uad.activity_date >= params.d_30), 0) as sessions_30d,
        coalesce(sum(uad.desktop_sessions) filter (where uad.activity_date >= params.d_30), 0)
            as desktop_sessions_30d,
        coalesce(sum(uad.mobile_sessions) filter (where uad.activity_date >= params.d_30), 0)
            as mobile_sessions_30d,
        coalesce(sum(uad.session_seconds) filter (where uad.activity_date >= params.d_30), 0)
            as session_seconds_30d,
        -- distinct features of [D-30, D) with ids 0..63: the bits of the OR of the days' masks
        coalesce(
            bit_count((bit_or(uad.feature_mask) filter (where uad.activity_date >= params.d_30))::bit(64)),
            0
        ) as mask_features_30d,
        bool_or(cardinality(uad.other_feature_ids) > 0) as has_other_features
    from metrics_state.user_activity_daily as uad
    cross join params
    where uad.activity_date >= params.d_60 and uad.activity_date < params.d
    group by uad.user_id
),

other_features as (
    -- distinct features of [D-30, D) with ids outside 0..63 (none unless the sources have them)
    select
        uad.user_id,
        count(distinct feature.feature_id) as features
    from metrics_state.user_activity_daily as uad
    cross join params
    cross join lateral unnest(uad.other_feature_ids) as feature (feature_id)
    where
        uad.activity_date >= params.d_30 and uad.activity_date < params.d
        and cardinality(uad.other_feature_ids) > 0
        -- a one-time test: the state is read again only when some user has such a feature
        and exists (
            select 1 from user_windows
            where user_windows.has_other_features
        )
    group by uad.user_id
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
            sum(user_windows.mask_features_30d + coalesce(other_features.features, 0)) filter (
                where user_windows.active_days_30d > 0
            ),
            0
        ) as active_user_features_30d,
        -- every session started in [D-30, D), whoever started it
        coalesce(sum(user_windows.sessions_30d), 0) as sessions_30d,
        coalesce(sum(user_windows.desktop_sessions_30d), 0) as desktop_sessions_30d,
        coalesce(sum(user_windows.mobile_sessions_30d), 0) as mobile_sessions_30d,
        coalesce(sum(user_windows.session_seconds_30d), 0) as session_seconds_30d
    from user_windows
    cross join params
    left join other_features on user_windows.user_id = other_features.user_id
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
            users_agg.session_seconds_30d::numeric / nullif(users_agg.sessions_30d, 0), 2
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
        round(100.0 * users_agg.desktop_sessions_30d / nullif(users_agg.sessions_30d, 0), 2)
            as desktop_usage_pct,
        round(100.0 * users_agg.mobile_sessions_30d / nullif(users_agg.sessions_30d, 0), 2)
            as mobile_usage_pct,
        round(users_agg.retained_users::numeric / nullif(users_agg.prior_active_users, 0), 4)
            as avg_30d_retention_rate
    from params
    cross join users_agg
)

select * from final
