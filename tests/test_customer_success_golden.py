"""Golden tests: every customer-success metric on a tiny hand-built fixture
(tests/fixtures/customer_success_golden.sql), expected values worked out by hand below."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from helpers import load_fixture, rows_by_key, table_dump
from metrics_layer import pipeline
from metrics_layer.registry import load_registry

CS = load_registry()["customer_success"]
D = date(2026, 3, 10)
TABLE = "entity.metrics_customer_success"

# Alpha (1): seats 101, 102, 103 (104 deactivated 02-20, 105 created after D).
#   MAU: 101, 102, 104 active in [02-08, 03-10) -> 3. Activation 2/3.
#   Engagement: active days 3, 1, 0 -> mean(10, 3.333, 0) = 4.44.
#   Features in window: 1, 4, 2 -> 3; core released before D: 1, 2 -> both used -> 1.0.
#   Tickets opened in window: #1, #2 -> 2; resolved by D: #1 -> 0.5.
#   Resolution hours over tickets resolved in window: #1 10 h, #3 480 h -> 245.
#   Devices: only #1 reported in [03-03, 03-10) -> 1, latest health 90.
#   Volume [02-08, 03-10): 100 + 200 + 300 + 50 = 650.
#   MRR: 800 now (downgrade 03-01), 1000 on 02-10 -> contraction 20. Plan: growth, the plan of
#   the subscription in force on D (raw.customers.plan still says enterprise).
#   Seats active in [03-03, 03-10): 101 only -> engagement component 100/3 = 33.33.
#   Health: 2 tickets in the window < 3, so support is left out (too little evidence):
#   (0.35*100/3 + 0.25*100 + 0.20*90) / 0.8 = 68.333 -> 68.33.
#   Churn = 0.7*(100-68.33) + 0.3*20 = 28.169 -> 28.17 (from the published health).
#   Success = 0.5*68.33 + 0.25*4.44 + 0.25*66.67 = 51.9425 -> 51.94 (published values).
ALPHA = {
    "customer_name": "Alpha Corp", "segment": "enterprise", "plan": "growth",
    "customer_health_score": Decimal("68.33"), "churn_risk_score": Decimal("28.17"),
    "composite_success_score": Decimal("51.94"), "monthly_active_users": 3,
    "user_activation_rate": Decimal("0.6667"), "avg_engagement_score": Decimal("4.44"),
    "features_adopted": 3, "core_feature_adoption_rate": Decimal("1.0000"),
    "support_tickets_30d": 2, "ticket_resolution_rate": Decimal("0.5000"),
    "avg_ticket_resolution_hours": Decimal("245.00"), "active_device_count": 1,
    "avg_device_health_score": Decimal("90.00"), "volume_processed_30d": 650,
    "current_mrr": Decimal("800.00"), "previous_month_mrr": Decimal("1000.00"),
}
# Beta (2): no seats, tickets or devices: every ratio with a zero denominator is NULL, and no
#   health component has evidence (adoption needs a seat: 0 of 2 core features by nobody is no
#   evidence) -> health NULL, so churn and success are NULL too. MRR flat at 99.50.
BETA = {
    "customer_name": "Beta O'Neil & Søn", "segment": "smb", "plan": "starter",
    "customer_health_score": None, "churn_risk_score": None,
    "composite_success_score": None, "monthly_active_users": 0,
    "user_activation_rate": None, "avg_engagement_score": None, "features_adopted": 0,
    "core_feature_adoption_rate": Decimal("0.0000"), "support_tickets_30d": 0,
    "ticket_resolution_rate": None, "avg_ticket_resolution_hours": None,
    "active_device_count": 0, "avg_device_health_score": None, "volume_processed_30d": 0,
    "current_mrr": Decimal("99.50"), "previous_month_mrr": Decimal("99.50"),
}
# Epsilon (5): one seat (501, activated), active on 03-01 using core feature 1; no subscription
#   -> current_mrr 0, previous NULL and plan NULL, so churn has no contraction component.
#   Engagement component 0 (the seat was not active in [03-03, 03-10)), adoption 1 of 2 core
#   = 50: health = (0.35*0 + 0.25*50) / 0.6 = 20.83; churn = 100 - 20.83 = 79.17;
#   success = 0.5*20.83 + 0.25*3.33 + 0.25*100 = 36.25.
EPSILON = {
    "customer_name": "Epsilon", "segment": "mid_market", "plan": None,
    "customer_health_score": Decimal("20.83"), "churn_risk_score": Decimal("79.17"),
    "composite_success_score": Decimal("36.25"), "monthly_active_users": 1,
    "user_activation_rate": Decimal("1.0000"), "avg_engagement_score": Decimal("3.33"),
    "features_adopted": 1, "core_feature_adoption_rate": Decimal("0.5000"),
    "support_tickets_30d": 0, "ticket_resolution_rate": None, "avg_ticket_resolution_hours": None,
    "active_device_count": 0, "avg_device_health_score": None, "volume_processed_30d": 0,
    "current_mrr": Decimal("0.00"), "previous_month_mrr": None,
}


def _build(conn, metric_date=D):
    pipeline.refresh_domain(conn, CS, metric_date, run_id="golden")
    return rows_by_key(conn, TABLE, metric_date, "customer_id")


def test_every_metric_matches_hand_computed_values(conn):
    load_fixture(conn, "customer_success_golden.sql")
    rows = _build(conn)
    # Gamma churned on 03-05, Delta signs up at noon on D: neither is active as of 00:00 on D
    assert sorted(rows) == [1, 2, 5]
    for cid, expected in ((1, ALPHA), (2, BETA), (5, EPSILON)):
        got = {k: rows[cid][k] for k in expected}
        assert got == expected, f"customer {cid}"


def test_placeholders_exist_as_null_columns(conn):
    load_fixture(conn, "customer_success_golden.sql")
    rows = _build(conn)
    names = [m.name for m in CS.placeholders]
    assert names == ["nps_score", "csat_score", "time_to_value_days", "expansion_potential_score"]
    assert all(rows[cid][n] is None for cid in rows for n in names)


def test_a_date_with_no_released_feature_gives_null_scores(conn):
    load_fixture(conn, "customer_success_golden.sql")
    # On 2024-12-01 only Epsilon exists, without seats (501 arrives 12-15), and no feature is
    # released yet: every component of health has a zero denominator -> NULL, not 0.
    rows = _build(conn, date(2024, 12, 1))
    assert list(rows) == [5]
    e = rows[5]
    assert e["core_feature_adoption_rate"] is None
    assert (e["customer_health_score"], e["churn_risk_score"], e["composite_success_score"]) == (None, None, None)
    assert (e["current_mrr"], e["previous_month_mrr"], e["monthly_active_users"]) == (Decimal("0.00"), None, 0)


def test_state_keeps_unknown_users_without_a_customer(conn):
    load_fixture(conn, "customer_success_golden.sql")
    _build(conn)
    row = conn.execute("select customer_id, events, sessions from metrics_state.user_activity_daily "
                       "where user_id = 999").fetchone()
    assert row == (None, 1, 1)
    # 30 days of state were built for D; a second refresh of D rebuilds only the late-data
    # lookback (lookback_days 3: 03-07..03-09) and finds no day changed
    assert conn.execute("select count(*) from metrics_ops.state_days").fetchone()[0] == 30
    again = pipeline.refresh_state(conn, "user_activity_daily", D, CS.lookback_days)
    assert (again.rebuilt, again.changed) == ([date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9)], [])


def test_rerunning_a_date_gives_identical_rows(conn):
    load_fixture(conn, "customer_success_golden.sql")
    _build(conn)
    first = table_dump(conn, TABLE)
    _build(conn, date(2026, 3, 9))
    _build(conn)
    assert [r for r in table_dump(conn, TABLE) if "2026-03-10" in r[0]] == first


def _insert_subscriptions(conn, rows: str) -> None:
    conn.execute("insert into raw.subscriptions (subscription_id, customer_id, plan, mrr, start_date, "
                 f"end_date) values {rows}")


def test_current_mrr_counts_the_subscriptions_in_force_at_the_snapshot(conn):
    # A subscription covers the days [start_date, end_date). The snapshot at 00:00 UTC on D sees
    # rows before D: a subscription counts on D when it covers D-1, i.e. start_date < D and
    # (end_date null or end_date >= D), as a customer counts when created_at < D <= churned_at.
    load_fixture(conn, "customer_success_golden.sql")
    _insert_subscriptions(conn, """
        (21, 2, 'enterprise', 5.00, '2026-03-10', null),        -- starts on D: not yet
        (22, 2, 'growth', 7.00, '2026-03-09', null),            -- starts on D-1: counts
        (23, 2, 'starter', 11.00, '2026-02-01', '2026-03-10'),  -- last day D-1: counts
        (24, 2, 'starter', 13.00, '2026-02-01', '2026-03-09')   -- last day D-2: ended""")
    beta = _build(conn)[2]
    # 99.50 + 7 + 11; as of 02-10 (D - 1 month): 99.50 + 11 + 13
    assert (beta["current_mrr"], beta["previous_month_mrr"]) == (Decimal("117.50"), Decimal("123.50"))
    # plan: of the subscriptions in force on D, the one that started last (21 has not started)
    assert beta["plan"] == "growth"


def test_previous_month_mrr_is_the_snapshot_of_d_minus_one_month_with_month_ends_clamped(conn):
    # D = 2026-03-31: D - 1 month = 2026-02-28 (PostgreSQL's date - interval '1 month' clamps to
    # the month's last day), so previous_month_mrr is what current_mrr was on 02-28
    load_fixture(conn, "customer_success_golden.sql")
    _insert_subscriptions(conn, """
        (25, 2, 'starter', 17.00, '2026-02-28', null),          -- starts on 02-28: not in previous
        (26, 2, 'starter', 19.00, '2026-02-01', '2026-02-28')   -- last day 02-27: in previous""")
    rows = _build(conn, date(2026, 3, 31))
    assert (rows[2]["current_mrr"], rows[2]["previous_month_mrr"]) == (Decimal("116.50"), Decimal("118.50"))
    # Alpha as of 02-28: still on the 1000.00 subscription that ends on 03-01
    assert (rows[1]["current_mrr"], rows[1]["previous_month_mrr"]) == (Decimal("800.00"), Decimal("1000.00"))


def test_plan_is_historized_from_subscriptions_and_name_and_segment_are_todays(conn):
    # Alpha moved from enterprise (sub 10, ends 03-01) to growth (sub 11, starts 03-01).
    load_fixture(conn, "customer_success_golden.sql")
    on_0301, on_0302 = _build(conn, date(2026, 3, 1))[1], _build(conn, date(2026, 3, 2))[1]
    # 03-01's snapshot covers 02-28 (enterprise, 1000); 03-02's covers 03-01 (growth, 800)
    assert (on_0301["plan"], on_0301["current_mrr"]) == ("enterprise", Decimal("1000.00"))
    assert (on_0302["plan"], on_0302["current_mrr"]) == ("growth", Decimal("800.00"))
    # raw.customers keeps no history: a rename or a new segment rewrites every past day on a
    # rebuild; plan does not follow raw.customers.plan
    conn.execute("update raw.customers set customer_name = 'Alpha Renamed', segment = 'mid_market', "
                 "plan = 'starter' where customer_id = 1")
    rebuilt = _build(conn, date(2026, 3, 1))[1]
    assert (rebuilt["customer_name"], rebuilt["segment"], rebuilt["plan"]) == (
        "Alpha Renamed", "mid_market", "enterprise")


def test_a_user_who_reaches_raw_users_late_counts_without_rebuilding_state(conn):
    # Users 99 and 98 are active on 03-05 before raw.users knows them; the state day 03-05 is
    # built then (customer_id NULL in the state). They arrive later: rebuilding D alone, with
    # the state untouched, counts them for their customers (the link is read at build time).
    load_fixture(conn, "customer_success_golden.sql")
    conn.execute("insert into raw.product_sessions values (20, 99, '2026-03-05 10:00+00', 60, 'desktop'), "
                 "(21, 98, '2026-03-05 11:00+00', 60, 'mobile')")
    conn.execute("insert into raw.product_events values (20, 20, 99, '2026-03-05 10:01+00', 'view', 4), "
                 "(21, 21, 98, '2026-03-05 11:01+00', 'view', 2)")
    assert _build(conn)[1]["monthly_active_users"] == 3
    conn.execute("insert into raw.users values (99, 1, '2026-03-01 00:00+00', null, null), "
                 "(98, 5, '2026-03-01 00:00+00', null, null)")
    pipeline.build_staging(conn, CS, D, run_id="late-user")   # no refresh_state
    pipeline.publish(conn, CS, D, run_id="late-user")
    assert conn.execute("select user_id, customer_id from metrics_state.user_activity_daily "
                        "where user_id in (98, 99) order by 1").fetchall() == [(98, None), (99, None)]
    rows = rows_by_key(conn, TABLE, D, "customer_id")
    assert rows[1]["monthly_active_users"] == 4
    # Epsilon: 98 used core feature 2 -> 2 features, both core features of 2 adopted
    assert (rows[5]["monthly_active_users"], rows[5]["features_adopted"],
            rows[5]["core_feature_adoption_rate"]) == (2, 2, Decimal("1.0000"))


def test_the_range_form_gives_the_per_date_rows_on_every_date(conn):
    """The range path builds many dates in one statement (the range form): on every date from
    2026-01-15 to 2026-04-15 of the golden fixture it gives exactly the per-date form's rows
    (seats created, deactivated and activated mid-range, subscriptions changing, tickets and
    device readings entering and leaving their windows, a user active before its created_at)."""
    from datetime import timedelta

    load_fixture(conn, "customer_success_golden.sql")
    # 120 was active (features 1 and 3) on 02-01..02-03, before its created_at (02-15 10:00): it
    # counts from 02-16 on, while those days are in the window; 121 is active on its creation
    # day (03-01) and deactivated on 03-20, its last day as a seat; 122 is active on 03-04, the
    # day before its created_at day (03-05 10:00): it counts from 03-06
    conn.execute("""
        insert into raw.users (user_id, customer_id, created_at, activated_at, deactivated_at) values
        (120, 1, '2026-02-15 10:00+00', '2026-02-15 11:00+00', null),
        (121, 1, '2026-03-01 08:00+00', null, '2026-03-20 12:00+00'),
        (122, 1, '2026-03-05 10:00+00', null, null);
        insert into raw.product_events (event_id, session_id, user_id, occurred_at, event_type, feature_id)
        select 70000 + n, 0, 120, '2026-02-01 09:00+00'::timestamptz + (n % 3) * interval '1 day',
               'view', case when n < 3 then 1 else 3 end
        from generate_series(0, 5) as n;
        insert into raw.product_events (event_id, session_id, user_id, occurred_at, event_type, feature_id)
        values (71000, 0, 121, '2026-03-01 09:00+00', 'view', 2), (71001, 0, 121, '2026-03-15 09:00+00', 'view', 2),
               (72000, 0, 122, '2026-03-04 09:00+00', 'view', 4);
    """)
    pipeline.ensure_schema(conn)
    dates = [date(2026, 1, 15) + timedelta(days=i) for i in range(91)]
    pipeline.refresh_states(conn, CS, dates)
    assert pipeline.uses_range_form(CS, dates, workers=2)
    built = pipeline.build_dates(conn, CS, dates, run_id="range-form")
    cols = ", ".join(CS.built_columns)
    per_date = pipeline.build_select(CS)
    for d in dates:
        got = conn.execute(f"select {cols} from metrics_staging.{CS.table} where stage_id = %s "  # noqa: S608
                           "and metric_date = %s order by customer_id", (pipeline.stage_key("range-form"), d)).fetchall()
        expected = conn.execute(f"select {cols} from ({per_date}) as q order by customer_id",  # noqa: S608
                                {"metric_date": d}).fetchall()
        assert got == expected, d
        assert built[d] == len(expected)
