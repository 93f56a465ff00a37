-- Baseline for the benchmark: the customer-success activity windows (monthly active users,
-- active days per seat, features adopted) recomputed from raw events for one metric_date,
-- i.e. what the build would cost without metrics_state.user_activity_daily.
with

params as (
    select
        %(metric_date)s::date as d,
        %(metric_date)s::date - 30 as d_30
),

events as (
    select
        users.customer_id,
        events.user_id,
        events.occurred_at::date as activity_date,
        events.feature_id
    from raw.product_events as events
    inner join raw.users as users on events.user_id = users.user_id
    cross join params
    where events.occurred_at >= params.d_30 and events.occurred_at < params.d
),

per_customer as (
    select
        customer_id,
        count(distinct user_id) as monthly_active_users,
        count(distinct (user_id, activity_date)) as active_user_days,
        count(distinct feature_id) as features_adopted
    from events
    group by customer_id
)

select * from per_customer
