-- metrics_customer_success for many metric_dates at once: the range path's form of
-- metrics_customer_success.sql (the daily run's form, which states the grain, the as-of rules
-- and the sources). Same rows, same values: tests/test_customer_success_golden.py and
-- tests/test_range.py build the same dates both ways. Bind parameter `metric_dates` (date[]).
--
-- How: the customer-level rules (customers, subscriptions, tickets, core features) are joined
-- with the dates directly (a grid: customers x dates). The per-user and per-reading rules,
-- which regrouped 30 days of state and telemetry per date, become +1/-1 changes of each count
-- on the days an entity starts and stops counting (as in metrics_product_analytics_range.sql):
--   * a user is known from the day after created_at (created_at < D) and a seat until the day of
--     deactivated_at (deactivated_at >= D); each change of a user's runs is clamped into that
--     interval on its own (one before it moves to its first day, one after it to the day after
--     its last; a run outside it nets zero);
--   * monthly active users: runs of active days at most 30 days apart, counted from the first
--     day + 1 to the last + 30; weekly active seats the same with 7 days; active seat days +1
--     for the 30 days after each active day;
--   * a customer's features: the OR of its users' masks per day, a feature counting from its use
--     + 1 unless used in the 30 days before, until its use + 31 unless used again in the 30 days
--     after; the core ones with the core mask of each date (one series per distinct mask);
--   * a device's latest reading of the last 7 days is the reading r for D in (r, min(next
--     reading, r + 7)] (one reading per device and day: the primary key);
--   * 30-day volume: +v at r + 1 and -v at r + 31 per customer and reading day.
-- A customer's count on D is the sum of its changes on days <= D. Customers with activity before
-- one of their users' created_at day (none in the seed) have their features computed per date.

{% from "customer_success/_scores.sql" import scores %}
{% from "customer_success/_tickets.sql" import ticket_counts, in_ticket_window %}
with

dates as (
    select distinct d
    from unnest({{ param('metric_dates') }}::date[]) as d
),

bounds as (
    -- read as scalar subqueries (plan-time parameters): each range scan is one index range
    select
        min(d) as first_d,
        max(d) as last_d
    from dates
),

params as (
    select
        d,
        d - 30 as d_30,
        d - 7 as d_7,
        (d - interval '1 month')::date as d_prev_month,
        3 as min_tickets_for_support   -- the support component of health needs >= 3 tickets in 30d
    from dates
),

-- ---------------------------------------------------------------- customer-level, per date
customers as (
    select
        params.d,
        customers.customer_id,
        customers.customer_name,
        customers.segment
    from {{ source_schema }}.customers as customers
    inner join params
        on
            customers.created_at < params.d
            and (customers.churned_at is null or customers.churned_at >= params.d)
),

subscriptions as (
    select
        params.d,
        params.d_prev_month,
        subscriptions.customer_id,
        subscriptions.subscription_id,
        subscriptions.plan,
        subscriptions.mrr,
        subscriptions.start_date,
        subscriptions.end_date
    from {{ source_schema }}.subscriptions as subscriptions
    inner join params on subscriptions.start_date < params.d
),

mrr as (
    select
        d,
        customer_id,
        sum(mrr) filter (where end_date is null or end_date >= d) as current_mrr,
        sum(mrr) filter (
            where start_date < d_prev_month and (end_date is null or end_date >= d_prev_month)
        ) as previous_month_mrr
    from subscriptions
    group by d, customer_id
),

plan_in_force as (
    select distinct on (d, customer_id)
        d,
        customer_id,
        plan
    from subscriptions
    where end_date is null or end_date >= d
    order by d asc, customer_id asc, start_date desc, mrr desc, subscription_id desc
),

core_features as (
    select
        params.d,
        features.feature_id
    from {{ source_schema }}.features as features
    inner join params on features.is_core and features.released_at < params.d
),

core_per_date as (
    select
        params.d,
        coalesce(
            bit_or(1::bigint << core_features.feature_id) filter (
                where core_features.feature_id between 0 and 63
            ),
            0
        ) as core_mask,
        count(core_features.feature_id) as core_features_released
    from params
    left join core_features on params.d = core_features.d
    group by params.d
),

core_masks as (
    select distinct core_mask from core_per_date
),

tickets as (
    select
        params.d,
        tickets.customer_id,
        {{ ticket_counts() }}
    from {{ source_schema }}.support_tickets as tickets
    inner join params
        on
            {{ in_ticket_window() }}
    where
        tickets.created_at < (select bounds.last_d from bounds)
        and (
            tickets.created_at >= (select bounds.first_d from bounds) - 30
            or tickets.resolved_at >= (select bounds.first_d from bounds) - 30
        )
    group by params.d, tickets.customer_id
),

-- ---------------------------------------------------------------- devices
readings as (
    -- each reading of [first D - 7, last D) with the device's next reading
    select
        telemetry.device_id,
        telemetry.reading_date as r,
        telemetry.health_score,
        lead(telemetry.reading_date) over (
            partition by telemetry.device_id order by telemetry.reading_date
        ) as next_r
    from {{ source_schema }}.device_telemetry as telemetry
    where telemetry.reading_date >= (select bounds.first_d from bounds) - 7
        and telemetry.reading_date < (select bounds.last_d from bounds)
),

latest_readings as (
    -- each reading with the dates D it is its device's latest reading of the last 7 days for:
    -- r < D <= min(next reading, r + 7)
    select
        readings.device_id,
        readings.health_score,
        readings.r + latest.k as d
    from readings
    cross join
        lateral generate_series(1, least(readings.next_r, readings.r + 7) - readings.r) as latest (k)
),

device_health as (
    -- the devices in service on D among them
    select
        params.d,
        devices.customer_id,
        count(*) as active_device_count,
        sum(latest_readings.health_score) as device_health_sum
    from latest_readings
    inner join params on latest_readings.d = params.d
    inner join {{ source_schema }}.devices as devices
        on
            latest_readings.device_id = devices.device_id
            and params.d > devices.registered_at
            and (devices.decommissioned_at is null or params.d <= devices.decommissioned_at)
    group by params.d, devices.customer_id
),

-- ---------------------------------------------------------------- per user
users as (
    -- known from the day after created_at (created_at < D), a seat until the day of
    -- deactivated_at (deactivated_at >= D; NULL: still one), activated from the day after
    -- activated_at; customer_id is today's value (raw.users keeps no history)
    select
        users.user_id,
        users.customer_id,
        users.created_at::date + 1 as known_from,
        users.activated_at::date + 1 as activated_from,
        users.deactivated_at::date + 1 as seat_end
    from {{ source_schema }}.users as users
),

active_days as (
    -- one row per user and active day of [first D - 30, last D) with the neighbouring active days
    select
        uad.user_id,
        uad.activity_date as a,
        lag(uad.activity_date) over by_day as prev_a,
        lead(uad.activity_date) over by_day as next_a
    from metrics_state.user_activity_daily as uad
    where
        uad.activity_date >= (select bounds.first_d from bounds) - 30
        and uad.activity_date < (select bounds.last_d from bounds)
        and uad.events > 0
    window by_day as (partition by uad.user_id order by uad.activity_date)
),

customer_days as (
    -- the OR of a customer's users' feature masks per day (users known the day after it)
    select
        users.customer_id,
        uad.activity_date as a,
        bit_or(uad.feature_mask) as mask
    from metrics_state.user_activity_daily as uad
    inner join users on uad.user_id = users.user_id
    where
        uad.activity_date >= (select bounds.first_d from bounds) - 30
        and uad.activity_date < (select bounds.last_d from bounds)
        and uad.events > 0
    group by users.customer_id, uad.activity_date
),

late_known as (
    -- customers with a user active before the day after that user's created_at: their features
    -- are computed per date (a user's days do not count before they are known)
    select distinct users.customer_id
    from metrics_state.user_activity_daily as uad
    inner join users on uad.user_id = users.user_id
    where
        uad.activity_date >= (select bounds.first_d from bounds) - 30
        and uad.activity_date < (select bounds.last_d from bounds)
        and uad.events > 0 and users.known_from > uad.activity_date + 1
),

feature_days as (
    select
        customer_days.customer_id,
        customer_days.a,
        customer_days.mask,
        bit_or(customer_days.mask) over (
            by_day range between 30 preceding and 1 preceding
        ) as mask_before,
        bit_or(customer_days.mask) over (
            by_day range between 1 following and 30 following
        ) as mask_after
    from customer_days
    where customer_days.customer_id not in (select late_known.customer_id from late_known)
    window by_day as (
        partition by customer_days.customer_id order by customer_days.a - date '2000-01-01'
    )
),

-- ---------------------------------------------------------------- every change, by customer and day
user_days as (
    -- a user whose changes would be clamped (known after the day after the activity, or a seat
    -- ending within its 30 days) keeps its bounds; the others (most) leave them NULL, so that
    -- their days group per customer (greatest() and least() ignore NULLs)
    select
        users.customer_id,
        active_days.a,
        active_days.prev_a,
        active_days.next_a,
        case
            when users.known_from > active_days.a + 1 or users.seat_end < active_days.a + 31
                then users.known_from
        end as known_from,
        case
            when users.known_from > active_days.a + 1 or users.seat_end < active_days.a + 31
                then users.seat_end
        end as seat_end
    from active_days
    inner join users on active_days.user_id = users.user_id
),

user_active as (
    -- the users' active days grouped per customer, day and bounds
    select
        customer_id,
        a,
        known_from,
        seat_end,
        count(*) as actives,
        count(*) filter (where prev_a is null or prev_a < a - 30) as starts_30d,
        count(*) filter (where next_a is null or next_a > a + 30) as ends_30d,
        count(*) filter (where prev_a is null or prev_a < a - 7) as starts_7d,
        count(*) filter (where next_a is null or next_a > a + 7) as ends_7d
    from user_days
    group by customer_id, a, known_from, seat_end
),

changes as (
    select
        user_active.customer_id,
        c.day,
        c.measure,
        c.delta
    from user_active
    cross join
        lateral (
            values
            -- monthly active users: from the day the user is known
            (greatest(user_active.a + 1, user_active.known_from), 'mau', user_active.starts_30d),
            (greatest(user_active.a + 31, user_active.known_from), 'mau', -user_active.ends_30d),
            -- weekly active seats and active seat days: while a seat
            (
                least(greatest(user_active.a + 1, user_active.known_from), user_active.seat_end),
                'weekly_active_seats', user_active.starts_7d
            ),
            (
                least(greatest(user_active.a + 8, user_active.known_from), user_active.seat_end),
                'weekly_active_seats', -user_active.ends_7d
            ),
            (
                least(greatest(user_active.a + 1, user_active.known_from), user_active.seat_end),
                'active_seat_days', user_active.actives
            ),
            (
                least(greatest(user_active.a + 31, user_active.known_from), user_active.seat_end),
                'active_seat_days', -user_active.actives
            )
        ) as c (day, measure, delta)
    where c.delta <> 0  -- most days neither start nor end a run

    union all

    select
        users.customer_id,
        c.day,
        c.measure,
        c.delta
    from users
    cross join
        lateral (
            values
            (least(users.known_from, users.seat_end), 'seat_count', 1),
            (users.seat_end, 'seat_count', -1),
            (
                case
                    when users.activated_from is not null
                        then least(greatest(users.known_from, users.activated_from), users.seat_end)
                end,
                'activated_seats', 1
            ),
            (case when users.activated_from is not null then users.seat_end end, 'activated_seats', -1)
        ) as c (day, measure, delta)
    where c.day is not null

    union all

    select
        volume_days.customer_id,
        c.day,
        'volume' as measure,
        c.delta
    from (
        select
            devices.customer_id,
            telemetry.reading_date,
            sum(telemetry.volume_processed) as volume
        from {{ source_schema }}.device_telemetry as telemetry
        inner join {{ source_schema }}.devices as devices on telemetry.device_id = devices.device_id
        where
            telemetry.reading_date >= (select bounds.first_d from bounds) - 30
            and telemetry.reading_date < (select bounds.last_d from bounds)
        group by devices.customer_id, telemetry.reading_date
    ) as volume_days
    cross join
        lateral (
            values
            (volume_days.reading_date + 1, volume_days.volume),
            (volume_days.reading_date + 31, -volume_days.volume)
        ) as c (day, delta)

    union all

    select
        feature_days.customer_id,
        c.day,
        'features' as measure,
        c.delta
    from feature_days
    cross join
        lateral (
            values
            (
                feature_days.a + 1,
                bit_count((feature_days.mask & ~coalesce(feature_days.mask_before, 0))::bit(64))
            ),
            (
                feature_days.a + 31,
                -bit_count((feature_days.mask & ~coalesce(feature_days.mask_after, 0))::bit(64))
            )
        ) as c (day, delta)
    where c.delta <> 0
),

core_changes as (
    -- the core features among them, once per core mask of the dates (a release inside the range
    -- starts another mask)
    select
        feature_days.customer_id,
        c.day,
        core_masks.core_mask,
        c.delta
    from feature_days
    cross join core_masks
    cross join
        lateral (
            values
            (
                feature_days.a + 1,
                bit_count(
                    (feature_days.mask & ~coalesce(feature_days.mask_before, 0) & core_masks.core_mask)::bit(
                        64
                    )
                )
            ),
            (
                feature_days.a + 31,
                -bit_count(
                    (feature_days.mask & ~coalesce(feature_days.mask_after, 0) & core_masks.core_mask)::bit(
                        64
                    )
                )
            )
        ) as c (day, delta)
    where c.delta <> 0
),

running as (
    -- each customer's counts on each date: its changes summed up to the date (a date's row comes
    -- after the changes of its own day)
    select
        grid.customer_id,
        grid.day as d,
        grid.is_date,
        sum(grid.mau) over by_day as mau,
        sum(grid.seat_count) over by_day as seat_count,
        sum(grid.activated_seats) over by_day as activated_seats,
        sum(grid.weekly_active_seats) over by_day as weekly_active_seats,
        sum(grid.active_seat_days) over by_day as active_seat_days,
        sum(grid.volume) over by_day as volume,
        sum(grid.features) over by_day as features
    from (
        select
            changes.customer_id,
            changes.day,
            false as is_date,
            sum(changes.delta) filter (where changes.measure = 'mau') as mau,
            sum(changes.delta) filter (where changes.measure = 'seat_count') as seat_count,
            sum(changes.delta) filter (where changes.measure = 'activated_seats') as activated_seats,
            sum(changes.delta) filter (where changes.measure = 'weekly_active_seats') as weekly_active_seats,
            sum(changes.delta) filter (where changes.measure = 'active_seat_days') as active_seat_days,
            sum(changes.delta) filter (where changes.measure = 'volume') as volume,
            sum(changes.delta) filter (where changes.measure = 'features') as features
        from changes
        where changes.day <= (select bounds.last_d from bounds)
        group by changes.customer_id, changes.day

        union all

        select
            customers.customer_id,
            customers.d as day,
            true as is_date,
            null as mau,
            null as seat_count,
            null as activated_seats,
            null as weekly_active_seats,
            null as active_seat_days,
            null as volume,
            null as features
        from customers
    ) as grid
    window by_day as (partition by grid.customer_id order by grid.day, grid.is_date rows unbounded preceding)
),

core_running as (
    select
        grid.customer_id,
        grid.day as d,
        grid.is_date,
        sum(grid.delta) over (
            partition by grid.customer_id, grid.core_mask order by grid.day, grid.is_date
            rows unbounded preceding
        ) as core_features
    from (
        select
            core_changes.customer_id,
            core_changes.core_mask,
            core_changes.day,
            false as is_date,
            sum(core_changes.delta) as delta
        from core_changes
        where core_changes.day <= (select bounds.last_d from bounds)
        group by core_changes.customer_id, core_changes.core_mask, core_changes.day

        union all

        select
            customers.customer_id,
            core_per_date.core_mask,
            customers.d as day,
            true as is_date,
            null as delta
        from customers
        inner join core_per_date on customers.d = core_per_date.d
    ) as grid
),

late_adoption as (
    -- the customers of late_known, per date as the daily form does it
    select
        params.d,
        users.customer_id,
        bit_count(bit_or(uad.feature_mask)::bit(64)) as features,
        bit_count((bit_or(uad.feature_mask) & min(core_per_date.core_mask))::bit(64)) as core_features
    from metrics_state.user_activity_daily as uad
    inner join users on uad.user_id = users.user_id
    inner join params
        on
            uad.activity_date >= params.d_30 and uad.activity_date < params.d
            and users.known_from <= params.d
    inner join core_per_date on params.d = core_per_date.d
    where
        users.customer_id in (select late_known.customer_id from late_known)
        -- a one-time test: nothing is read unless such a customer exists
        and exists (select 1 from late_known)
    group by params.d, users.customer_id
),

other_features_used as (
    -- features with ids outside 0..63 (not in the masks; none unless the sources have them)
    select distinct
        params.d,
        users.customer_id,
        feature.feature_id
    from metrics_state.user_activity_daily as uad
    inner join users on uad.user_id = users.user_id
    cross join lateral unnest(uad.other_feature_ids) as feature (feature_id)
    inner join params
        on
            uad.activity_date >= params.d_30 and uad.activity_date < params.d
            and users.known_from <= params.d
    where
        uad.activity_date >= (select bounds.first_d from bounds) - 30
        and uad.activity_date < (select bounds.last_d from bounds)
        and cardinality(uad.other_feature_ids) > 0
),

other_adoption as (
    select
        other_features_used.d,
        other_features_used.customer_id,
        count(*) as features,
        count(core_features.feature_id) as core_features
    from other_features_used
    left join core_features
        on
            other_features_used.d = core_features.d
            and other_features_used.feature_id = core_features.feature_id
    group by other_features_used.d, other_features_used.customer_id
),

-- ---------------------------------------------------------------- per-customer exact counts
base as (
    select
        customers.d as metric_date,
        customers.customer_id,
        customers.customer_name,
        customers.segment,
        plan_in_force.plan,
        params.min_tickets_for_support,
        coalesce(running.mau, 0)::bigint as monthly_active_users,
        coalesce(running.seat_count, 0)::bigint as seat_count,
        case when running.seat_count > 0 then coalesce(running.activated_seats, 0)::bigint end
            as activated_seats,
        case when running.seat_count > 0 then coalesce(running.weekly_active_seats, 0)::bigint end
            as weekly_active_seats,
        case when running.seat_count > 0 then coalesce(running.active_seat_days, 0)::bigint end
            as active_seat_days,
        coalesce(late_adoption.features, running.features, 0)::bigint
        + coalesce(other_adoption.features, 0) as features_adopted,
        coalesce(late_adoption.core_features, core_running.core_features, 0)::bigint
        + coalesce(other_adoption.core_features, 0) as core_features_used,
        core_per_date.core_features_released,
        coalesce(tickets.support_tickets_30d, 0) as support_tickets_30d,
        coalesce(tickets.resolved_of_opened_30d, 0) as resolved_of_opened_30d,
        tickets.resolved_30d,
        tickets.resolution_seconds_30d,
        coalesce(device_health.active_device_count, 0) as active_device_count,
        device_health.device_health_sum,
        coalesce(running.volume, 0) as volume_processed_30d,
        coalesce(mrr.current_mrr, 0.00) as current_mrr,
        nullif(mrr.previous_month_mrr, 0) as previous_month_mrr
    from customers
    inner join params on customers.d = params.d
    inner join core_per_date on customers.d = core_per_date.d
    inner join running
        on customers.customer_id = running.customer_id and customers.d = running.d and running.is_date
    left join core_running
        on
            customers.customer_id = core_running.customer_id and customers.d = core_running.d
            and core_running.is_date
    left join late_adoption
        on customers.customer_id = late_adoption.customer_id and customers.d = late_adoption.d
    left join other_adoption
        on customers.customer_id = other_adoption.customer_id and customers.d = other_adoption.d
    left join plan_in_force
        on customers.customer_id = plan_in_force.customer_id and customers.d = plan_in_force.d
    left join tickets on customers.customer_id = tickets.customer_id and customers.d = tickets.d
    left join device_health
        on customers.customer_id = device_health.customer_id and customers.d = device_health.d
    left join mrr on customers.customer_id = mrr.customer_id and customers.d = mrr.d
),

{{ scores() }}

select * from final
