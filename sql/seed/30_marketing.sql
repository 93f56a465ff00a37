-- Synthetic source data for the marketing contract (raw.ad_campaigns, raw.ad_spend_daily,
-- raw.leads, raw.attribution_touchpoints, raw.website_sessions), generated in the database.
-- Runs after 10_customer_success.sql (reads raw.customers); 40_sales.sql assigns the MQLs to reps.
-- Deterministic: every random draw is a hash of (row key, seed). History covers the `days` UTC
-- days before end_date. Parameters come from pg_temp.seed_params (scale, days, seed, end_date).
-- Shapes: 30 campaigns (20 paid on Google 45% / LinkedIn 30% / Meta 25% of ~$10k x scale a day,
-- less on weekends; email, events and organic programmes without spend); ~40 x scale new leads
-- a weekday, half become MQLs; 75% of the customers created inside the history arrive through a
-- lead that converts on the customer's created_at; 1-8 touchpoints per lead; ~1.4k x scale
-- website sessions a day, ~42% bounced, ~2.5% converted.

create or replace function pg_temp.r(k text, s bigint) returns float8
language sql immutable parallel safe
as $$ select (hashtextextended(k, s) & 4503599627370495)::float8 / 4503599627370496 $$;
create or replace function pg_temp.ri(k bigint, salt int, s bigint) returns float8
language sql immutable parallel safe
as $$ select (hashint8extended(k, s * 1000 + salt) & 4503599627370495)::float8 / 4503599627370496 $$;

truncate raw.website_sessions, raw.attribution_touchpoints, raw.leads, raw.ad_spend_daily,
raw.ad_campaigns;

-- ---------------------------------------------------------------- campaigns
-- 1-8 Google (paid_search), 9-14 LinkedIn and 15-20 Meta (paid_social), 21-24 email,
-- 25-27 events, 28-30 organic content. The first campaign of each group is always on.
insert into raw.ad_campaigns
select
    i,
    g.label || ' - ' || (array[
        'Brand', 'Competitors', 'Retargeting', 'Lookalike', 'Webinar Promo', 'Free Trial',
        'Case Study', 'Product Launch', 'ABM Enterprise', 'Q-end Push'
    ])[1 + (i % 10)] || ' #' || i,
    g.platform,
    g.channel,
    case when i in (1, 9, 15, 21, 25, 28) then p.end_date - p.days - 200
        else p.end_date - p.days - 20 + floor(pg_temp.r('cs' || i, p.seed) * (p.days + 10))::int
    end,
    null
from pg_temp.seed_params as p
cross join generate_series(1, 30) as i
cross join lateral (
    select
        case when i <= 8 then 'google_ads' when i <= 14 then 'linkedin_ads' when i <= 20 then 'meta_ads' end
            as platform,
        case when i <= 8 then 'paid_search' when i <= 20 then 'paid_social' when i <= 24 then 'email'
            when i <= 27 then 'events' else 'organic_search'
        end as channel,
        case when i <= 8 then 'Google Search' when i <= 14 then 'LinkedIn' when i <= 20 then 'Meta'
            when i <= 24 then 'Newsletter' when i <= 27 then 'Event' else 'Content'
        end as label
) as g;

-- a third of the other campaigns end 20-60 days after they start (when that is in the past)
update raw.ad_campaigns as c
set ended_on = c.started_on + 20 + floor(pg_temp.r('ce' || c.campaign_id, p.seed) * 40)::int
from pg_temp.seed_params as p
where c.campaign_id not in (1, 9, 15, 21, 25, 28)
    and pg_temp.r('cend' || c.campaign_id, p.seed) < 0.33
    and c.started_on + 20 + floor(pg_temp.r('ce' || c.campaign_id, p.seed) * 40)::int < p.end_date - 1;

-- ---------------------------------------------------------------- ad spend
insert into raw.ad_spend_daily
select
    x.day,
    c.campaign_id,
    c.platform,
    s.spend,
    round(s.spend * case c.platform when 'google_ads' then 40 when 'linkedin_ads' then 25 else 90 end),
    round(s.spend * case c.platform when 'google_ads' then 1.2 when 'linkedin_ads' then 0.15 else 0.9 end)
from raw.ad_campaigns as c
cross join pg_temp.seed_params as p
cross join lateral generate_series(1, p.days) as day_no
cross join lateral (select p.end_date - day_no as day) as x
cross join
    lateral (
        select round((
            p.scale
            * case c.platform when 'google_ads' then 700 when 'linkedin_ads' then 650 else 520 end
            * (0.6 + 0.8 * pg_temp.r('sp' || c.campaign_id || ':' || day_no, p.seed))
            * case when extract(isodow from x.day) >= 6 then 0.7 else 1.0 end
        )::numeric, 2) as spend
    ) as s
where c.platform is not null
    and c.started_on <= x.day
    and (c.ended_on is null or c.ended_on >= x.day);

-- ---------------------------------------------------------------- leads
-- (a) leads that never convert: ~40 x scale a weekday; half become MQLs within a week
-- (b) one converting lead for 75% of the customers created inside the history
with drafts as (
    select
        (day_no::bigint * 100000 + k) * 2 as lead_id,
        (p.end_date - day_no)::timestamptz
        + pg_temp.r('lt' || day_no || ':' || k, p.seed) * interval '1 day' as created_at,
        case when pg_temp.r('mq' || day_no || ':' || k, p.seed) < 0.5
                then power(pg_temp.r('mqd' || day_no || ':' || k, p.seed), 2) * interval '7 days'
        end as mql_after,
        null::timestamptz as converted_at,
        null::bigint as customer_id
    from pg_temp.seed_params as p
    cross join lateral generate_series(1, p.days) as day_no
    cross join lateral generate_series(1, ceil(48 * p.scale)::int) as k
    where pg_temp.r('ln' || day_no || ':' || k, p.seed)
        < case when extract(isodow from p.end_date - day_no) >= 6 then 0.35 else 0.85 end
    union all
    select
        c.customer_id * 2 + 1,
        greatest(
            (p.end_date - p.days)::timestamptz,
            c.created_at - (14 + 70 * pg_temp.r('lc' || c.customer_id, p.seed)) * interval '1 day'
        ),
        null,
        c.created_at,
        c.customer_id
    from raw.customers as c
    cross join pg_temp.seed_params as p
    where c.created_at >= (p.end_date - p.days)::timestamptz
        and pg_temp.r('viaLead' || c.customer_id, p.seed) < 0.75
),

sourced as (
    -- the lead's campaign: a channel group first, then one of its campaigns live that day
    select
        d.*,
        case
            when u.u < 0.30 then 'google_ads' when u.u < 0.48 then 'linkedin_ads'
            when u.u < 0.62 then 'meta_ads' when u.u < 0.76 then 'email'
            when u.u < 0.86 then 'events' else 'organic_search'
        end as source_group
    from drafts as d
    cross join pg_temp.seed_params as p
    cross join lateral (select pg_temp.r('src' || d.lead_id, p.seed) as u) as u
)

insert into raw.leads
select
    s.lead_id,
    (
        select c.campaign_id from raw.ad_campaigns as c
        where coalesce(c.platform, c.channel) = s.source_group
            and c.started_on <= s.created_at::date
            and (c.ended_on is null or c.ended_on >= s.created_at::date)
        order by pg_temp.r('cp' || s.lead_id || ':' || c.campaign_id, p.seed)
        limit 1
    ),
    s.created_at,
    case
        -- a converting lead became an MQL early in its journey
        when s.converted_at is not null
            then s.created_at + (s.converted_at - s.created_at) * 0.2 * pg_temp.r('cm' || s.lead_id, p.seed)
        when s.created_at + s.mql_after < p.end_date::timestamptz then s.created_at + s.mql_after
    end,
    null,
    s.converted_at,
    s.customer_id
from sourced as s
cross join pg_temp.seed_params as p;

-- ---------------------------------------------------------------- touchpoints
-- the first touch is the lead's campaign channel at lead creation; later touches are spread up
-- to the conversion (converting leads: 2-7 touches) or over three weeks (others: 1-3)
insert into raw.attribution_touchpoints
select
    l.lead_id * 10 + j,
    l.lead_id,
    l.customer_id,
    case when j = 1 then coalesce(c.channel, 'direct')
        else (array[
            'paid_search', 'paid_search', 'paid_social', 'paid_social', 'email', 'email', 'email',
            'organic_search', 'organic_search', 'events', 'referral', 'direct', 'direct'
        ])[1 + floor(13 * pg_temp.r('tc' || l.lead_id || ':' || j, p.seed))::int]
    end,
    case when j = 1 then l.created_at
        else l.created_at + pg_temp.r('tw' || l.lead_id || ':' || j, p.seed) * (
                coalesce(l.converted_at, least(l.created_at + interval '21 days', p.end_date::timestamptz))
                - l.created_at
            )
    end
from raw.leads as l
cross join pg_temp.seed_params as p
left join raw.ad_campaigns as c on l.campaign_id = c.campaign_id
cross join lateral generate_series(
    1,
    case when l.converted_at is not null then 2 + floor(6 * pg_temp.r('nt' || l.lead_id, p.seed))::int
        else 1 + floor(3 * power(pg_temp.r('nt' || l.lead_id, p.seed), 2))::int
    end
) as j;

-- ---------------------------------------------------------------- website sessions
-- keyed by the session id day_no * 1000000 + k
insert into raw.website_sessions
select
    x.session_id,
    (p.end_date - day_no)::timestamptz + pg_temp.ri(x.session_id, 31, p.seed) * interval '1 day',
    ch.channel,
    b.bounced,
    not b.bounced and pg_temp.ri(x.session_id, 32, p.seed) < 0.045
from pg_temp.seed_params as p
cross join lateral generate_series(1, p.days) as day_no
cross join lateral generate_series(1, ceil(2000 * p.scale)::int) as k
cross join lateral (select day_no::bigint * 1000000 + k as session_id) as x
cross join lateral (select pg_temp.ri(x.session_id, 33, p.seed) as u) as h
cross join
    lateral (
        select case
            when h.u < 0.38 then 'organic_search'
            when h.u < 0.60 then 'direct'
            when h.u < 0.75 then 'paid_search'
            when h.u < 0.85 then 'paid_social'
            when h.u < 0.93 then 'referral'
            else 'email'
        end as channel
    ) as ch
cross join
    lateral (
        select pg_temp.ri(x.session_id, 34, p.seed) < case ch.channel
            when 'paid_social' then 0.62 when 'paid_search' then 0.48 when 'direct' then 0.35 else 0.40
        end as bounced
    ) as b
where pg_temp.ri(x.session_id, 35, p.seed)
    < case when extract(isodow from p.end_date - day_no) >= 6 then 0.45 else 0.8 end;

analyze raw.ad_campaigns, raw.ad_spend_daily, raw.leads, raw.attribution_touchpoints,
raw.website_sessions;
