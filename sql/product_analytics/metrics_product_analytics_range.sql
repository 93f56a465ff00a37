-- metrics_product_analytics for many metric_dates at once: the range path's form of
-- metrics_product_analytics.sql (the daily run's form, which states the grain, the as-of rule
-- and the windows). Same rows, same values: tests/test_range.py and
-- tests/test_product_analytics_golden.py build the same dates both ways.
-- Bind parameter `metric_dates` (date[]): one row per distinct date in it.
--
-- How: a user's presence in a rolling window, and each feature's, only changes where an active
-- day enters or leaves the window. So instead of regrouping 60 days of state per metric_date,
-- the state of [first D - 60, last D) is read ONCE, sorted by user and day, and every active day
-- becomes +1/-1 changes of each count on the days it starts and stops counting:
--   * a user counts in a window of L days ([D-L, D)) for D in (a, a + L] for each active day a;
--     consecutive active days at most L apart make one run, so a run adds +1 at (first day + 1)
--     and -1 at (last day + L + 1). prior 30d ([D-60, D-30)) is the 30-day count shifted by 30,
--     retained = in both = 30d + prior - 60d (60d: active in [D-60, D), the union of both).
--   * a power user (>= 12 active days in [D-30, D)) after active day a_i, until the next active
--     day, while the 11th earlier active day is in the window: D in (a_i, min(a_i+1, a_i-11 + 30)].
--   * a feature counts for D in (u, u + 30] for each day u it was used: +1 at u + 1 unless it was
--     used in the 30 days before u, -1 at u + 31 unless it is used again in the 30 days after.
--     A user's features are the sum over features, so the per-user OR of 30 days of masks
--     becomes two ORs of neighbouring days per active day. Features only come from events, so
--     a user with a feature is a monthly active user.
--   * sums of sessions are +x at r + 1 and -x at r + 31 for each state day r.
-- Each metric_date's value is the sum of the changes on days <= D. Every D sees only rows of
-- [D-60, D), all of which are read; a run that began before the rows read is cut at their first
-- day, which changes the counts of days before the first D only.

with

dates as (
    select distinct d
    from unnest({{ param('metric_dates') }}::date[]) as d
),

bounds as (
    select
        min(d) - 60 as first_day,
        max(d) as end_day
    from dates
),

-- ---------------------------------------------------------------- per user and active day
active_days as not materialized (
    -- one row per user and active day (>= 1 event): the neighbouring active days and the
    -- features of the 30 days before and after, in one sort by user and day (not materialized:
    -- the rare eventless_sessions below computes it again, and only when it runs)
    select
        uad.user_id,
        uad.activity_date as a,
        uad.sessions,
        uad.feature_mask,
        cardinality(uad.other_feature_ids) > 0 as has_other_features,
        lag(uad.activity_date) over by_day as prev_a,
        lead(uad.activity_date) over by_day as next_a,
        -- the active day 11 before: with this one, 12 active days
        lag(uad.activity_date, 11) over by_day as a_11,
        bit_or(uad.feature_mask) over (by_day range between 30 preceding and 1 preceding) as mask_before,
        bit_or(uad.feature_mask) over (by_day range between 1 following and 30 following) as mask_after
    from metrics_state.user_activity_daily as uad
    cross join bounds
    where
        uad.activity_date >= bounds.first_day and uad.activity_date < bounds.end_day
        and uad.events > 0
    -- ordered by the day's number (an integer: its frames compare integers, not dates + intervals)
    window by_day as (partition by uad.user_id order by uad.activity_date - date '2000-01-01')
),

active_changes as (
    -- the changes starting on each active day (grouped by it) and the ends of the power-user
    -- spans (grouped by their own end day), in one pass
    select
        a,
        power_end,
        count(*) as actives,
        count(*) filter (where prev_a is null or prev_a < a - 7) as starts_7d,
        count(*) filter (where next_a is null or next_a > a + 7) as ends_7d,
        count(*) filter (where prev_a is null or prev_a < a - 30) as starts_30d,
        count(*) filter (where next_a is null or next_a > a + 30) as ends_30d,
        count(*) filter (where prev_a is null or prev_a < a - 60) as starts_60d,
        count(*) filter (where next_a is null or next_a > a + 60) as ends_60d,
        count(*) filter (where power_end is not null) as power_starts,
        coalesce(sum(sessions), 0) as sessions,
        coalesce(sum(bit_count((feature_mask & ~coalesce(mask_before, 0))::bit(64))), 0) as feature_starts,
        coalesce(sum(bit_count((feature_mask & ~coalesce(mask_after, 0))::bit(64))), 0) as feature_ends,
        bool_or(has_other_features) as has_other_features
    from (
        select
            active_days.*,
            case
                when active_days.a_11 is not null and active_days.a_11 + 30 > active_days.a
                    then least(active_days.next_a, active_days.a_11 + 30) + 1
            end as power_end
        from active_days
    ) as spans
    group by grouping sets ((a), (power_end))
),

-- ---------------------------------------------------------------- sums over every state day
state_days as (
    select
        uad.activity_date as r,
        sum(uad.sessions) as sessions,
        sum(uad.desktop_sessions) as desktop_sessions,
        sum(uad.mobile_sessions) as mobile_sessions,
        sum(uad.session_seconds) as session_seconds,
        count(*) filter (where uad.events = 0 and uad.sessions > 0) as eventless_days
    from metrics_state.user_activity_daily as uad
    cross join bounds
    where uad.activity_date >= bounds.first_day and uad.activity_date < bounds.end_day
    group by uad.activity_date
),

-- ---------------------------------------------------------------- the rare cases
eventless_sessions as (
    -- sessions on a user's day without events count for active_user_sessions_30d on the days
    -- of (r, r + 30] on which the user is a monthly active user: the spans (a, min(next a,
    -- a + 30)] of their active days (disjoint). Read only when such a day exists.
    select
        greatest(e.activity_date, ad.a) + 1 as from_day,
        least(e.activity_date + 30, ad.next_a, ad.a + 30) + 1 as to_day,
        e.sessions
    from metrics_state.user_activity_daily as e
    cross join bounds
    inner join active_days as ad
        on
            e.user_id = ad.user_id
            and ad.a < e.activity_date + 30
            and least(ad.next_a, ad.a + 30) > e.activity_date
    where
        e.activity_date >= bounds.first_day and e.activity_date < bounds.end_day
        and e.events = 0 and e.sessions > 0
        -- a one-time test: nothing is read again unless such a day exists
        and exists (
            select 1 from state_days
            where state_days.eventless_days > 0
        )
),

other_feature_days as (
    -- features with ids outside 0..63 (not in the masks; none unless the sources have them):
    -- each day a user used one, with the days they used it before and after
    select
        f.u,
        lag(f.u) over by_use as prev_u,
        lead(f.u) over by_use as next_u
    from (
        select distinct
            uad.user_id,
            feature.feature_id,
            uad.activity_date as u
        from metrics_state.user_activity_daily as uad
        cross join bounds
        cross join lateral unnest(uad.other_feature_ids) as feature (feature_id)
        where
            uad.activity_date >= bounds.first_day and uad.activity_date < bounds.end_day
            and cardinality(uad.other_feature_ids) > 0
            -- a one-time test: the state is read again only when some user has such a feature
            and exists (
                select 1 from active_changes
                where active_changes.has_other_features
            )
    ) as f
    window by_use as (partition by f.user_id, f.feature_id order by f.u)
),

-- ---------------------------------------------------------------- every change, by day
changes as (
    -- (day, count, change): one row per count changed on a day
    select
        c.day,
        c.measure,
        c.delta
    from active_changes as ac
    cross join
        lateral (
            values
            (ac.a + 1, 'dau', ac.actives),
            (ac.a + 2, 'dau', -ac.actives),
            (ac.a + 1, 'wau', ac.starts_7d),
            (ac.a + 8, 'wau', -ac.ends_7d),
            (ac.a + 1, 'mau', ac.starts_30d),
            (ac.a + 31, 'mau', -ac.ends_30d),
            (ac.a + 1, 'active_60d', ac.starts_60d),
            (ac.a + 61, 'active_60d', -ac.ends_60d),
            (ac.a + 31, 'prior_30d', ac.starts_30d),
            (ac.a + 61, 'prior_30d', -ac.ends_30d),
            (ac.a + 1, 'power_users', ac.power_starts),
            (ac.a + 1, 'features', ac.feature_starts),
            (ac.a + 31, 'features', -ac.feature_ends),
            (ac.a + 1, 'active_user_sessions', ac.sessions),
            (ac.a + 31, 'active_user_sessions', -ac.sessions)
        ) as c (day, measure, delta)
    where ac.a is not null

    union all

    select
        ac.power_end as day,
        'power_users' as measure,
        -ac.power_starts as delta
    from active_changes as ac
    where ac.power_end is not null

    union all

    select
        c.day,
        c.measure,
        c.delta
    from state_days as sd
    cross join
        lateral (
            values
            (sd.r + 1, 'sessions', sd.sessions),
            (sd.r + 31, 'sessions', -sd.sessions),
            (sd.r + 1, 'desktop_sessions', sd.desktop_sessions),
            (sd.r + 31, 'desktop_sessions', -sd.desktop_sessions),
            (sd.r + 1, 'mobile_sessions', sd.mobile_sessions),
            (sd.r + 31, 'mobile_sessions', -sd.mobile_sessions),
            (sd.r + 1, 'session_seconds', sd.session_seconds),
            (sd.r + 31, 'session_seconds', -sd.session_seconds)
        ) as c (day, measure, delta)

    union all

    select
        c.day,
        'active_user_sessions' as measure,
        c.delta
    from eventless_sessions as es
    cross join
        lateral (
            values (es.from_day, es.sessions), (es.to_day, -es.sessions)
        ) as c (day, delta)

    union all

    select
        c.day,
        'features' as measure,
        c.delta
    from other_feature_days as o
    cross join lateral (
        values
        (o.u + 1, case when o.prev_u is null or o.prev_u < o.u - 30 then 1 else 0 end),
        (o.u + 31, case when o.next_u is null or o.next_u > o.u + 30 then -1 else 0 end)
    ) as c (day, delta)
),

-- ---------------------------------------------------------------- product totals per date
users_agg as (
    select
        dates.d,
        totals.dau as daily_active_users,
        totals.wau as weekly_active_users,
        totals.mau as monthly_active_users,
        totals.power_users,
        totals.prior_30d as prior_active_users,
        totals.mau + totals.prior_30d - totals.active_60d as retained_users,
        totals.active_user_sessions as active_user_sessions_30d,
        totals.features as active_user_features_30d,
        totals.sessions as sessions_30d,
        totals.desktop_sessions as desktop_sessions_30d,
        totals.mobile_sessions as mobile_sessions_30d,
        totals.session_seconds as session_seconds_30d
    from dates
    cross join lateral (
        -- every count on D: the sum of its changes on the days up to D
        select
            coalesce(sum(changes.delta) filter (where changes.measure = 'dau'), 0) as dau,
            coalesce(sum(changes.delta) filter (where changes.measure = 'wau'), 0) as wau,
            coalesce(sum(changes.delta) filter (where changes.measure = 'mau'), 0) as mau,
            coalesce(sum(changes.delta) filter (where changes.measure = 'active_60d'), 0) as active_60d,
            coalesce(sum(changes.delta) filter (where changes.measure = 'prior_30d'), 0) as prior_30d,
            coalesce(sum(changes.delta) filter (where changes.measure = 'power_users'), 0) as power_users,
            coalesce(sum(changes.delta) filter (where changes.measure = 'features'), 0) as features,
            coalesce(sum(changes.delta) filter (where changes.measure = 'active_user_sessions'), 0)
                as active_user_sessions,
            coalesce(sum(changes.delta) filter (where changes.measure = 'sessions'), 0) as sessions,
            coalesce(sum(changes.delta) filter (where changes.measure = 'desktop_sessions'), 0)
                as desktop_sessions,
            coalesce(sum(changes.delta) filter (where changes.measure = 'mobile_sessions'), 0)
                as mobile_sessions,
            coalesce(sum(changes.delta) filter (where changes.measure = 'session_seconds'), 0)
                as session_seconds
        from changes
        where changes.day <= dates.d
    ) as totals
),

final as (
    select
        users_agg.d as metric_date,
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
    from users_agg
)

select * from final
