-- Synthetic source data for the customer-success contract (raw.*), generated in the database.
-- Deterministic: every random draw is a hash of (row key, seed), so the same scale, days, seed
-- and end_date give the same rows whatever the plan or parallelism. History covers the `days`
-- UTC days before end_date (end_date itself is not loaded: "through yesterday").
-- Parameters come from pg_temp.seed_params (scale, days, seed, end_date), filled by the loader.
-- Shapes: 10% enterprise / 30% mid-market / 60% SMB accounts; ~20.2 seats per customer on average
-- with a long tail; ~12% new and ~7% churned customers inside the history; 15% of accounts at
-- risk (low usage, more tickets); weekday/weekend rhythm; long-tailed usage per user; ~8% of
-- tickets never resolved; ~10% unhealthy devices and ~5% that stop reporting.

-- r(key, seed): a uniform draw in [0, 1) from a hash; inlined by the planner.
create or replace function pg_temp.r(k text, s bigint) returns float8
language sql immutable parallel safe
as $$ select (hashtextextended(k, s) & 4503599627370495)::float8 / 4503599627370496 $$;
-- ri(key, salt, seed): the same for an integer key, for the large tables (hashing an integer is
-- several times cheaper than building and hashing a text); each kind of draw has its own salt.
create or replace function pg_temp.ri(k bigint, salt int, s bigint) returns float8
language sql immutable parallel safe
as $$ select (hashint8extended(k, s * 1000 + salt) & 4503599627370495)::float8 / 4503599627370496 $$;

truncate raw.device_telemetry, raw.devices, raw.support_tickets, raw.product_events,
raw.product_sessions, raw.features, raw.users, raw.subscriptions, raw.customers;

-- ---------------------------------------------------------------- customers
insert into raw.customers
select
    i as customer_id,
    -- a few names carry quotes, ampersands and non-ASCII letters on purpose
    (array[
        'Acme', 'Northwind', 'Globex', 'Initech', 'Umbrella', 'Stark', 'Wayne', 'Hooli',
        'Vandelay', 'Soylent', 'Tyrell', 'Wonka', 'Cyberdyne', 'Oscorp', 'Gringotts',
        'O''Brien & Søn', 'Zürich Ærø', 'Blue Sky', 'Pied Piper', 'Aperture'
    ])[1 + floor(pg_temp.r('cn1' || i, p.seed) * 20
    )::int]
    || ' ' || (array[
        'Analytics', 'Logistics', 'Health', 'Labs', 'Foods', 'Systems', 'Energy',
        'Capital', 'Retail', 'Media'
    ])[1 + floor(pg_temp.r('cn2' || i, p.seed) * 10
    )::int]
    || ' ' || i as customer_name,
    case when i % 10 = 0 then 'enterprise' when i % 10 in (1, 2, 3) then 'mid_market' else 'smb' end,
    case when i % 10 = 0 then 'enterprise' when i % 10 in (1, 2, 3) then 'growth' else 'starter' end,
    (array['NA', 'EMEA', 'APAC', 'LATAM'])[1 + floor(pg_temp.r('rg' || i, p.seed) * 4)::int],
    case
        when pg_temp.r('new' || i, p.seed) < 0.12     -- new inside the history window
            then (p.end_date - 1 - floor(pg_temp.r('cd' || i, p.seed) * p.days)::int)::timestamptz
        else (p.end_date - p.days - 1 - floor(pg_temp.r('cd' || i, p.seed) * 700)::int)::timestamptz
    end + pg_temp.r('ct' || i, p.seed) * interval '1 day',
    null
from pg_temp.seed_params as p, generate_series(1, greatest(1, round(1000 * p.scale))::int) as i;

update raw.customers as c
set
    churned_at = (p.end_date - 1 - floor(pg_temp.r('ch' || c.customer_id, p.seed) * p.days)::int)::timestamptz
    + pg_temp.r('cht' || c.customer_id, p.seed) * interval '1 day'
from pg_temp.seed_params as p
where pg_temp.r('churn' || c.customer_id, p.seed) < 0.07
    and c.created_at < (p.end_date - p.days)::timestamptz;

-- ---------------------------------------------------------------- subscriptions
-- one subscription per customer; 25% changed plan once (70% upgrades, 30% downgrades)
with base as (
    select
        c.customer_id,
        c.plan,
        c.created_at::date as start_date,
        (c.churned_at::date + 1) as churn_end,
        round((case c.segment when 'enterprise' then 5000 + 15000 * pg_temp.r('m' || c.customer_id, p.seed)
            when 'mid_market' then 1000 + 4000 * pg_temp.r('m' || c.customer_id, p.seed)
            else 100 + 900 * pg_temp.r('m' || c.customer_id, p.seed)
        end)::numeric, 2) as mrr,
        pg_temp.r('chg' || c.customer_id, p.seed) < 0.25 as changed,
        pg_temp.r('up' || c.customer_id, p.seed) < 0.7 as upgrade,
        p.end_date,
        p.days,
        p.seed
    from raw.customers as c, pg_temp.seed_params as p
),

dated as (
    select
        base.*,
        -- the change happens somewhere between signup and yesterday, mostly inside the history
        greatest(
            base.start_date + 1,
            base.end_date - 1 - floor(pg_temp.r('cw' || base.customer_id, base.seed) * (base.days + 40))::int
        )
            as change_date
    from base
)

insert into raw.subscriptions
select
    customer_id * 2,
    customer_id,
    plan,
    mrr,
    start_date,
    case when changed and change_date < coalesce(churn_end, end_date) then change_date else churn_end end
from dated
union all
select
    customer_id * 2 + 1,
    customer_id,
    plan,
    round(mrr * case when upgrade then 1.5 else 0.6 end, 2),
    change_date,
    churn_end
from dated
where changed and change_date < coalesce(churn_end, end_date);

-- ---------------------------------------------------------------- users (seats)
insert into raw.users
select
    row_number() over (order by c.customer_id, g) as user_id,
    c.customer_id,
    u.created_at,
    case when pg_temp.r('act' || c.customer_id || ':' || g, p.seed) < 0.85
            then u.created_at + pg_temp.r('acd' || c.customer_id || ':' || g, p.seed) * interval '14 days'
    end as activated_at,
    case when pg_temp.r('dea' || c.customer_id || ':' || g, p.seed) < 0.04
            then (
                p.end_date - 1 - floor(pg_temp.r('ded' || c.customer_id || ':' || g, p.seed) * p.days)::int
            )::timestamptz
    end as deactivated_at
from raw.customers as c
cross join pg_temp.seed_params as p
cross join
    lateral generate_series(1, greatest(1, round(
        (case c.segment when 'enterprise' then 64 when 'mid_market' then 26 else 10 end)
        * (0.5 + pg_temp.r('nu' || c.customer_id, p.seed))
    ))::int) as g
cross join lateral (
    select
        c.created_at + pg_temp.r('uc' || c.customer_id || ':' || g, p.seed)
        * least(p.end_date::timestamptz - c.created_at, interval '90 days') as created_at
) as u;

-- activation and deactivation never land in the future or before creation
update raw.users as u set
    activated_at = case when u.activated_at < p.end_date::timestamptz then u.activated_at end,
    deactivated_at = case when u.deactivated_at > u.created_at then u.deactivated_at end
from pg_temp.seed_params as p;

-- ---------------------------------------------------------------- features
insert into raw.features
select
    f,
    (array[
        'dashboards', 'reports', 'alerts', 'integrations', 'api', 'user_admin', 'exports',
        'sharing', 'search', 'mobile_app', 'scheduling', 'audit_log', 'sso', 'webhooks',
        'templates', 'ai_assistant', 'forecasting', 'workflows', 'data_catalog', 'sandbox'
    ])[f],
    f <= 6,
    case when f <= 15 then (p.end_date - p.days - 400)::timestamptz
        -- five recent releases spread over the history window
        else (p.end_date - p.days + (f - 15) * p.days / 6)::timestamptz
    end
from pg_temp.seed_params as p, generate_series(1, 20) as f;

-- ---------------------------------------------------------------- product sessions
-- one draw per seat per day: active with a long-tailed per-user propensity, less on weekends,
-- much less for at-risk accounts, never after churn or deactivation. Keys of the draws: the
-- user, the customer, the user-day (user_id * 10000 + day_no) and the session id itself.
insert into raw.product_sessions
select
    x.session_id,
    u.user_id,
    day::timestamptz + interval '7 hours' + pg_temp.ri(x.session_id, 1, p.seed) * interval '14 hours',
    60 + floor(power(pg_temp.ri(x.session_id, 2, p.seed), 2) * 3600)::int,
    case
        when pg_temp.ri(x.session_id, 3, p.seed) < 0.8
            then
                case when pg_temp.ri(u.user_id, 4, p.seed) < 0.65 then 'desktop'
                    when pg_temp.ri(u.user_id, 4, p.seed) < 0.95 then 'mobile' else 'tablet'
                end
        when pg_temp.ri(x.session_id, 5, p.seed) < 0.5 then 'desktop'
        else 'mobile'
    end
from pg_temp.seed_params as p
cross join raw.users as u
inner join raw.customers as c on u.customer_id = c.customer_id
cross join lateral generate_series(1, p.days) as day_no
cross join lateral (select p.end_date - day_no as day) as d
-- the first session of an active user-day, then (rarer) a second and a third
cross join
    lateral (
        select k from generate_series(1, 3) as k
        where k = 1 or pg_temp.ri((u.user_id * 10000 + day_no) * 4 + k, 9, p.seed) < 0.35 / k
    ) as kk
cross join lateral (select (u.user_id * 10000 + day_no) * 4 + kk.k as session_id) as x
where u.created_at < d.day + 1
    and (u.deactivated_at is null or u.deactivated_at > d.day)
    and (c.churned_at is null or c.churned_at > d.day)
    and pg_temp.ri(u.user_id * 10000 + day_no, 6, p.seed)
    < (0.03 + 0.6 * power(pg_temp.ri(u.user_id, 7, p.seed), 2))
    * case when extract(isodow from d.day) >= 6 then 0.35 else 1.0 end
    * case when pg_temp.ri(c.customer_id, 8, p.seed) < 0.15 then 0.3 else 1.0 end;

-- ---------------------------------------------------------------- product events
-- 1-10 events per session, keyed session_id * 16 + e
insert into raw.product_events
select
    s.session_id * 10 + e as event_id,
    s.session_id,
    s.user_id,
    s.started_at + (s.duration_seconds * e / 8.0) * interval '1 second',
    (array['view', 'click', 'create', 'update', 'share'])[
        1 + floor(pg_temp.ri(s.session_id * 16 + e, 10, p.seed) * 5)::int
    ],
    case
        when pg_temp.ri(s.session_id * 16 + e, 11, p.seed) < 0.15 then null
        -- a tenth of events try one of the recent releases, once it is out
        when pg_temp.ri(s.session_id * 16 + e, 12, p.seed) < 0.1 and f.released_at <= s.started_at
            then f.feature_id
        else 1 + floor(15 * power(pg_temp.ri(s.session_id * 16 + e, 13, p.seed), 1.6))::int
    end
from raw.product_sessions as s
cross join pg_temp.seed_params as p
cross join
    lateral generate_series(1, 1 + floor(9 * power(pg_temp.ri(s.session_id, 14, p.seed), 2))::int) as e
inner join raw.features as f
    on f.feature_id = 16 + floor(pg_temp.ri(s.session_id * 16 + e, 15, p.seed) * 5)::int;

-- ---------------------------------------------------------------- support tickets
-- keyed by the ticket id (customer_id * 10000 + day_no) * 4 + k; at-risk customers (the same
-- draw as for sessions) open more
insert into raw.support_tickets
select
    x.ticket_id,
    c.customer_id,
    t.created_at,
    case when pg_temp.ri(x.ticket_id, 16, p.seed) >= 0.08
            and t.created_at + t.hours * interval '1 hour' < p.end_date::timestamptz
            then t.created_at + t.hours * interval '1 hour'
    end,
    (array['low', 'normal', 'normal', 'high', 'urgent'])[
        1 + floor(pg_temp.ri(x.ticket_id, 17, p.seed) * 5)::int
    ]
from raw.customers as c
cross join pg_temp.seed_params as p
cross join lateral generate_series(1, p.days) as day_no
cross join lateral generate_series(1, 2) as k
cross join lateral (select (c.customer_id * 10000 + day_no) * 4 + k as ticket_id) as x
cross join
    lateral (
        select
            (p.end_date - day_no)::timestamptz
            + pg_temp.ri(x.ticket_id, 18, p.seed) * interval '1 day' as created_at,
            0.5 + 120 * power(pg_temp.ri(x.ticket_id, 19, p.seed), 3) as hours
    ) as t
where t.created_at >= c.created_at
    and (c.churned_at is null or t.created_at < c.churned_at)
    and pg_temp.ri(x.ticket_id, 20, p.seed)
    < (case c.segment when 'enterprise' then 0.35 when 'mid_market' then 0.12 else 0.04 end)
    * case when pg_temp.ri(c.customer_id, 8, p.seed) < 0.15 then 2.5 else 1.0 end
    / k;

-- ---------------------------------------------------------------- devices
insert into raw.devices
select
    c.customer_id * 1000 + g,
    c.customer_id,
    (array['gateway', 'sensor', 'agent'])[
        1 + floor(pg_temp.r('dt' || c.customer_id || ':' || g, p.seed) * 3)::int
    ],
    c.created_at + pg_temp.r('dr' || c.customer_id || ':' || g, p.seed)
    * least(p.end_date::timestamptz - c.created_at, interval '60 days'),
    case when pg_temp.r('dd' || c.customer_id || ':' || g, p.seed) < 0.04
            then (
                p.end_date - 1 - floor(pg_temp.r('ddd' || c.customer_id || ':' || g, p.seed) * p.days)::int
            )::timestamptz
    end
from raw.customers as c
cross join pg_temp.seed_params as p
cross join lateral generate_series(1, greatest(1, round(
    (case c.segment when 'enterprise' then 20 when 'mid_market' then 6 else 2 end)
    * (0.5 + pg_temp.r('nd' || c.customer_id, p.seed))
))::int) as g;

-- ---------------------------------------------------------------- device telemetry
-- ~10% of devices run unhealthy; ~5% go silent from a day inside the history. Keys: the device
-- and the device-day (device_id * 10000 + day_no).
insert into raw.device_telemetry
select
    d.device_id,
    day,
    round(least(100, greatest(
        0,
        case when
                pg_temp.ri(d.device_id, 21, p.seed) < 0.1
                then 20 + 35 * pg_temp.ri(d.device_id * 10000 + day_no, 22, p.seed)
            else 72 + 28 * pg_temp.ri(d.device_id * 10000 + day_no, 22, p.seed)
        end
    ))::numeric, 2),
    floor(5000 * power(pg_temp.ri(d.device_id * 10000 + day_no, 23, p.seed), 3))::bigint
from raw.devices as d
inner join raw.customers as c on d.customer_id = c.customer_id
cross join pg_temp.seed_params as p
cross join lateral generate_series(1, p.days) as day_no
cross join lateral (select p.end_date - day_no as day) as x
where d.registered_at < day + 1
    and (d.decommissioned_at is null or d.decommissioned_at > day)
    and (c.churned_at is null or c.churned_at > day)
    and not (
        pg_temp.ri(d.device_id, 24, p.seed) < 0.05
        and day_no < 2 + floor(pg_temp.ri(d.device_id, 25, p.seed) * 20)
    )
    and pg_temp.ri(d.device_id * 10000 + day_no, 26, p.seed) < 0.97;

analyze raw.customers, raw.subscriptions, raw.users, raw.features, raw.product_sessions,
raw.product_events, raw.support_tickets, raw.devices, raw.device_telemetry;
