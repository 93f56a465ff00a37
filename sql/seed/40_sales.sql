-- Synthetic source data for the sales contract (raw.sales_reps, raw.opportunities,
-- raw.sales_activities), generated in the database; also assigns raw.leads' MQLs to reps.
-- Runs after 10_customer_success.sql (customers, subscriptions) and 30_marketing.sql (leads).
-- Deterministic: every random draw is a hash of (row key, seed). History covers the `days` UTC
-- days before end_date. Parameters come from pg_temp.seed_params (scale, days, seed, end_date).
-- Shapes: ~25 x scale reps (at least 6) in enterprise 20% / mid-market 40% / SMB 40% teams,
-- ~15% hired and ~8% gone inside the history. Every customer created inside the history is a
-- won opportunity closed at the customer's created_at, for 12 x its first MRR (ACV): from its
-- converting lead (75%) or outbound. 60% of the other MQLs get an opportunity; 85% of those are
-- lost within 1-7 weeks, the rest are still open. Reps log 8-33 calls, 15-50 emails and 1-4
-- meetings a weekday, a tenth of that on weekends.

create or replace function pg_temp.r(k text, s bigint) returns float8
language sql immutable parallel safe
as $$ select (hashtextextended(k, s) & 4503599627370495)::float8 / 4503599627370496 $$;
create or replace function pg_temp.ri(k bigint, salt int, s bigint) returns float8
language sql immutable parallel safe
as $$ select (hashint8extended(k, s * 1000 + salt) & 4503599627370495)::float8 / 4503599627370496 $$;

truncate raw.sales_activities, raw.opportunities, raw.sales_reps;

-- ---------------------------------------------------------------- reps
insert into raw.sales_reps
select
    i,
    (array[
        'Ana', 'Ben', 'Chloé', 'Dev', 'Eitan', 'Fatima', 'Grace', 'Hugo', 'Ines', 'Jonas',
        'Kemi', 'Liam', 'Mei', 'Noah', 'Olga', 'Priya'
    ])[1 + floor(16 * pg_temp.r('rf' || i, p.seed))::int]
    || ' ' || (array[
        'Ortiz', 'O''Connor', 'Nakamura', 'Schmidt', 'Okafor', 'Rossi', 'Dubois', 'Kowalski',
        'Haddad', 'Lindqvist', 'Mensah', 'Park'
    ])[1 + floor(12 * pg_temp.r('rl' || i, p.seed))::int],
    case when i % 5 = 0 then 'enterprise' when i % 5 in (1, 2) then 'mid_market' else 'smb' end,
    case when i > 5 and pg_temp.r('rh' || i, p.seed) < 0.15
            then (p.end_date - 1 - floor(pg_temp.r('rhd' || i, p.seed) * p.days)::int)::timestamptz
        else (p.end_date - p.days - 30 - floor(pg_temp.r('rhd' || i, p.seed) * 900)::int)::timestamptz
    end + interval '9 hours',
    null
from pg_temp.seed_params as p
cross join generate_series(1, greatest(6, round(25 * p.scale))::int) as i;

update raw.sales_reps as s
set
    left_at = (p.end_date - 1 - floor(pg_temp.r('rld' || s.rep_id, p.seed) * p.days)::int)::timestamptz
    + interval '17 hours'
from pg_temp.seed_params as p
where s.rep_id > 5
    and s.hired_at < (p.end_date - p.days)::timestamptz
    and pg_temp.r('rlt' || s.rep_id, p.seed) < 0.08;

-- ---------------------------------------------------------------- lead assignment
-- every MQL goes to a rep active when it qualified (and, if it converts, still there then)
with picks as (
    select
        l.lead_id,
        (
            select s.rep_id from raw.sales_reps as s
            where s.hired_at < l.mql_at and (s.left_at is null or s.left_at > coalesce(l.converted_at, l.mql_at))
            order by pg_temp.r('ar' || l.lead_id || ':' || s.rep_id, p.seed)
            limit 1
        ) as rep_id
    from raw.leads as l
    cross join pg_temp.seed_params as p
    where l.mql_at is not null
)

update raw.leads as l
set assigned_rep_id = coalesce(picks.rep_id, 1)
from picks
where l.lead_id = picks.lead_id;

-- ---------------------------------------------------------------- opportunities
-- (a) won from a converting lead: closes on the customer's created_at for 12 x its first MRR
insert into raw.opportunities
select
    l.lead_id as opportunity_id,
    l.assigned_rep_id,
    l.lead_id,
    l.customer_id,
    12 * sub.mrr,
    'closed_won',
    l.mql_at + (l.converted_at - l.mql_at) * 0.2 * pg_temp.r('oc' || l.lead_id, p.seed),
    l.converted_at
from raw.leads as l
cross join pg_temp.seed_params as p
inner join raw.subscriptions as sub on sub.subscription_id = l.customer_id * 2
where l.customer_id is not null;

-- (b) won outbound: the other customers created inside the history, by a rep of their segment
insert into raw.opportunities
select
    2000000000 + c.customer_id,
    coalesce((
        select s.rep_id from raw.sales_reps as s
        where s.hired_at < o.created_at and (s.left_at is null or s.left_at > c.created_at)
        order by s.team <> c.segment, pg_temp.r('or' || c.customer_id || ':' || s.rep_id, p.seed)
        limit 1
    ), 1),
    null,
    c.customer_id,
    12 * sub.mrr,
    'closed_won',
    o.created_at,
    c.created_at as closed_at
from raw.customers as c
cross join pg_temp.seed_params as p
inner join raw.subscriptions as sub on sub.subscription_id = c.customer_id * 2
cross join
    lateral (
        select greatest(
            (p.end_date - p.days)::timestamptz,
            c.created_at - (20 + 60 * pg_temp.r('oo' || c.customer_id, p.seed)) * interval '1 day'
        ) as created_at
    ) as o
where c.created_at >= (p.end_date - p.days)::timestamptz
    and not exists (
        select 1 from raw.leads as l
        where l.customer_id = c.customer_id
    );

-- (c) MQLs that do not convert: 60% get an opportunity; 85% of those are lost after 1-7 weeks
-- (if that is in the past), the rest are open at a stage drawn by hash
insert into raw.opportunities
select
    l.lead_id as opportunity_id,
    l.assigned_rep_id,
    l.lead_id,
    null,
    round((12 * case
        when a.u < 0.1 then 5000 + 15000 * pg_temp.r('oa2' || l.lead_id, p.seed)
        when a.u < 0.4 then 1000 + 4000 * pg_temp.r('oa2' || l.lead_id, p.seed)
        else 100 + 900 * pg_temp.r('oa2' || l.lead_id, p.seed)
    end)::numeric, 2),
    case when x.lost then 'closed_lost'
        else (array['prospecting', 'qualification', 'proposal', 'negotiation'])[
                1 + floor(4 * pg_temp.r('os' || l.lead_id, p.seed))::int
            ]
    end,
    o.created_at,
    case when x.lost then o.lost_at end
from raw.leads as l
cross join pg_temp.seed_params as p
cross join lateral (select pg_temp.r('oa' || l.lead_id, p.seed) as u) as a
cross join
    lateral (
        select
            l.mql_at + pg_temp.r('ocr' || l.lead_id, p.seed) * interval '5 days' as created_at,
            l.mql_at + (7 + 42 * pg_temp.r('ol' || l.lead_id, p.seed)) * interval '1 day' as lost_at
    ) as o
cross join
    lateral (
        select pg_temp.r('olt' || l.lead_id, p.seed) < 0.85 and o.lost_at < p.end_date::timestamptz as lost
    ) as x
where l.mql_at is not null
    and l.customer_id is null
    and pg_temp.r('oq' || l.lead_id, p.seed) < 0.6
    and o.created_at < p.end_date::timestamptz;

-- ---------------------------------------------------------------- activities
insert into raw.sales_activities
select
    ((s.rep_id * 10000 + day_no) * 4 + t.type_no) * 100 + k,
    s.rep_id,
    t.activity_type,
    x.day::timestamptz + interval '8 hours'
    + pg_temp.ri(((s.rep_id * 10000 + day_no) * 4 + t.type_no) * 100 + k, 41, p.seed) * interval '10 hours',
    null,
    null
from raw.sales_reps as s
cross join pg_temp.seed_params as p
cross join lateral generate_series(1, p.days) as day_no
cross join lateral (select p.end_date - day_no as day) as x
cross join
    lateral (
        values (1, 'call', 8, 25), (2, 'email', 15, 35), (3, 'meeting', 1, 4)
    ) as t (type_no, activity_type, base, spread)
cross join
    lateral generate_series(
        1,
        floor(
            (t.base + t.spread * pg_temp.ri((s.rep_id * 10000 + day_no) * 4 + t.type_no, 42, p.seed))
            * case when extract(isodow from x.day) >= 6 then 0.1 else 1.0 end
        )::int
    ) as k
-- from the first full day after the hire to the last full day before leaving
where s.hired_at < x.day::timestamptz
    and (s.left_at is null or s.left_at >= (x.day + 1)::timestamptz);

analyze raw.sales_reps, raw.opportunities, raw.sales_activities, raw.leads;
