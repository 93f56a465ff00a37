"""Golden tests: every product-analytics metric on a tiny hand-built fixture
(tests/fixtures/product_analytics_golden.sql), expected values worked out by hand below."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

from helpers import load_fixture, rows_by_key, table_dump
from metrics_layer import pipeline, validation
from metrics_layer.paths import EXPECTATIONS_DIR
from metrics_layer.registry import load_registry

PA = load_registry()["product"]
D = date(2026, 3, 10)
TABLE = "entity.metrics_product_analytics"

# D = 2026-03-10: daily = 03-09, 7d = [03-03, 03-10), 30d = [02-08, 03-10),
# prior 30d = [01-09, 02-08). Active = at least one product event that day.
#   101: events on 12 days of 30d (02-08, 02-10..02-19, 03-09), features {1, 2} (its feature 4
#        was on 01-20, prior window only); 12 desktop sessions x 600 s. Prior active (01-20).
#   102: events on 11 days 02-20..03-02 (ends the day before 7d), feature {3};
#        11 mobile sessions x 300 s.
#   103: event on 03-03 (first day of 7d), features {1, 4}; 1 tablet session of 1200 s.
#        Prior active on 01-09 (first day of the prior window).
#   104: last event 02-07 23:59:59, the last day of the prior window: prior active, not in 30d.
#   105: only on D itself (after the snapshot): counted nowhere.
#   106: session starts 02-07 23:50 (outside 30d), its only event is at 02-08 00:05: active in
#        30d with 0 sessions and 0 features; not prior active (no event on 02-07).
#   107: one 100 s desktop session on 03-05 without any event: never active, but the session
#        counts for duration and platform.
#   999: unknown to raw.users, event and 60 s mobile session on 03-09: counts like anyone.
# DAU {101, 999} = 2; WAU {101, 103, 999} = 3; MAU {101, 102, 103, 106, 999} = 5.
# dau_mau = 2/5 = 0.4; wau_mau = 3/5 = 0.6.
# Sessions started in 30d: 12 + 11 + 1 (103) + 1 (107) + 1 (999) = 26, seconds
#   7200 + 3300 + 1200 + 100 + 60 = 11860 -> avg 456.1538 -> 456.15.
#   desktop 12 + 1 = 13 -> 50.00 %; mobile 11 + 1 = 12 -> 46.15 %; (tablet 1 -> 3.85 %).
# sessions_per_user: sessions of MAU users 12 + 11 + 1 + 0 + 1 = 25 (107's is not) / 5 = 5.00.
# avg_features_used_per_user: (2 + 1 + 2 + 0 + 1) / 5 = 1.20.
# power users (>= 12 active days of 30): 101 only (102 has 11) -> 1, 100 x 1/5 = 20.00 %.
# retention: prior active {101, 103, 104} = 3, active again in 30d {101, 103} -> 2/3 = 0.6667.
EXPECTED_D = {
    "product_scope": "all",
    "daily_active_users": 2, "weekly_active_users": 3, "monthly_active_users": 5,
    "dau_mau_ratio": Decimal("0.4000"), "wau_mau_ratio": Decimal("0.6000"),
    "avg_session_duration": Decimal("456.15"), "sessions_per_user": Decimal("5.00"),
    "avg_features_used_per_user": Decimal("1.20"),
    "power_users": 1, "power_user_percentage": Decimal("20.00"),
    "desktop_usage_pct": Decimal("50.00"), "mobile_usage_pct": Decimal("46.15"),
    "avg_30d_retention_rate": Decimal("0.6667"),
}

# D = 2026-01-10: daily = 01-09, 7d = [01-03, 01-10), 30d = [2025-12-11, 01-10),
# prior 30d = [2025-11-11, 2025-12-11) holds no activity at all.
#   103: event on 01-09 (feature 2), 60 s desktop session; 104: event on 01-08 (no feature),
#   180 s mobile session.
# DAU 1, WAU 2, MAU 2 -> 0.5 and 1.0; sessions 2, 240 s -> 120.00 s; desktop 50 %, mobile 50 %;
# sessions per user 2/2 = 1.00; features (1 + 0)/2 = 0.50; no power user -> 0 and 0.00 %;
# retention: nobody active in the prior window -> zero denominator -> NULL.
EXPECTED_JAN = {
    "daily_active_users": 1, "weekly_active_users": 2, "monthly_active_users": 2,
    "dau_mau_ratio": Decimal("0.5000"), "wau_mau_ratio": Decimal("1.0000"),
    "avg_session_duration": Decimal("120.00"), "sessions_per_user": Decimal("1.00"),
    "avg_features_used_per_user": Decimal("0.50"),
    "power_users": 0, "power_user_percentage": Decimal("0.00"),
    "desktop_usage_pct": Decimal("50.00"), "mobile_usage_pct": Decimal("50.00"),
    "avg_30d_retention_rate": None,
}

# D = 2025-12-01: nothing happened in [2025-10-02, 2025-12-01). The row still exists; counts
# are 0 and every ratio has a zero denominator -> NULL.
EXPECTED_EMPTY = {
    "daily_active_users": 0, "weekly_active_users": 0, "monthly_active_users": 0,
    "dau_mau_ratio": None, "wau_mau_ratio": None, "avg_session_duration": None,
    "sessions_per_user": None, "avg_features_used_per_user": None,
    "power_users": 0, "power_user_percentage": None,
    "desktop_usage_pct": None, "mobile_usage_pct": None, "avg_30d_retention_rate": None,
}


def _build(conn, metric_date=D):
    pipeline.refresh_domain(conn, PA, metric_date, run_id="golden")
    return rows_by_key(conn, TABLE, metric_date, "product_scope")


def _check(row: dict, expected: dict) -> None:
    assert {k: row[k] for k in expected} == expected


def test_every_metric_matches_hand_computed_values(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    rows = _build(conn)
    assert list(rows) == ["all"]
    _check(rows["all"], EXPECTED_D)
    # every implemented metric is asserted above
    assert {m.name for m in PA.implemented} == set(EXPECTED_D) - {"product_scope"}


def test_a_date_with_an_empty_prior_window_gives_null_retention(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    _check(_build(conn, date(2026, 1, 10))["all"], EXPECTED_JAN)


def test_a_date_without_activity_gives_zero_counts_and_null_ratios(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    _check(_build(conn, date(2025, 12, 1))["all"], EXPECTED_EMPTY)


def test_placeholders_exist_as_null_columns(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    row = _build(conn)["all"]
    names = [m.name for m in PA.placeholders]
    assert names == ["feature_release_adoption_7d", "error_rate_pct", "crash_free_session_rate",
                     "ab_test_results"]
    assert [row[n] for n in names] == [None] * 4


def test_state_holds_sixty_days_and_keeps_unknown_users(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    _build(conn)
    # the retention base needs [D-60, D) = [2026-01-09, 2026-03-10): 60 days of state
    days = conn.execute("select min(activity_date), max(activity_date), count(*) "
                        "from metrics_ops.state_days where state = 'user_activity_daily'").fetchone()
    assert days == (date(2026, 1, 9), date(2026, 3, 9), 60)
    row = conn.execute("select customer_id, events, sessions, mobile_sessions "
                       "from metrics_state.user_activity_daily where user_id = 999").fetchone()
    assert row == (None, 1, 1, 1)
    # 106's session day (02-07) has no event and its event day (02-08) no session
    rows = conn.execute("select activity_date, events, sessions from metrics_state.user_activity_daily "
                        "where user_id = 106 order by 1").fetchall()
    assert rows == [(date(2026, 2, 7), 0, 1), (date(2026, 2, 8), 1, 0)]


def test_rerunning_a_date_gives_identical_rows(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    _build(conn)
    first = table_dump(conn, TABLE)
    _build(conn, date(2026, 3, 9))
    _build(conn)
    assert [r for r in table_dump(conn, TABLE) if "2026-03-10" in r[0]] == first


def test_unified_rows_use_domain_product_and_entity_all(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    _build(conn)
    pipeline.build_unified(conn, force_dates=[D])
    rows = dict(conn.execute(
        "select metric_name, metric_value from entity.metrics_unified_domains "
        "where domain = 'product' and entity_type = 'product' and entity_id = 'all' "
        "and entity_name is null and metric_date = %s", (D,)).fetchall())
    # implemented, non-null metrics only; placeholders never reach the unified table
    assert rows == {k: Decimal(v) for k, v in EXPECTED_D.items() if k != "product_scope"}


def test_suite_covers_every_tier_1_metric():
    suite = json.loads((EXPECTATIONS_DIR / PA.expectation_suite).read_text())
    text = json.dumps(suite["expectations"])
    tier_1 = [m.name for m in PA.implemented if m.tier == "tier_1"]
    assert tier_1 == ["daily_active_users", "weekly_active_users", "monthly_active_users",
                      "dau_mau_ratio", "wau_mau_ratio"]
    assert [m for m in tier_1 if m not in text] == []


def test_suite_passes_on_the_golden_day_and_blocks_a_day_without_users(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    empty_day = date(2025, 12, 1)
    # the DAG's order: state, build into staging, validate, publish (which empties staging)
    pipeline.stage(conn, PA, D)
    good = validation.validate_day(PA, D)
    assert good.success, good.describe()
    pipeline.publish(conn, PA, D)
    pipeline.stage(conn, PA, empty_day)
    bad = validation.validate_day(PA, empty_day)
    failed = {(f.expectation, f.column) for f in bad.failures}
    # MAU = 0 is a loading outage, not a product state: the day must not be published
    assert failed == {
        ("expect_column_values_to_be_between", "monthly_active_users"),
        ("expect_column_values_to_not_be_null", "dau_mau_ratio"),
        ("expect_column_values_to_not_be_null", "wau_mau_ratio"),
    }


def test_users_moving_to_another_customer_do_not_change_a_rebuilt_past_day(conn):
    # registry as_of: no product metric reads raw.users.customer_id (today's value, not historized)
    load_fixture(conn, "product_analytics_golden.sql")
    _check(_build(conn)["all"], EXPECTED_D)
    conn.execute("insert into raw.customers (customer_id, customer_name, segment, plan, region, "
                 "created_at, churned_at) values (2, 'Beta Ltd', 'smb', 'starter', 'EMEA', "
                 "'2026-03-20 00:00+00', null)")
    conn.execute("update raw.users set customer_id = 2 where user_id in (101, 103)")
    # rebuild D and all 60 days of its state from today's raw.users (as a backfill would)
    pipeline.refresh_domain(conn, PA, D, run_id="backfill", lookback_days=60)
    labels = conn.execute("select distinct customer_id from metrics_state.user_activity_daily "
                          "where user_id in (101, 103)").fetchall()
    assert labels == [(2,)]
    _check(rows_by_key(conn, TABLE, D, "product_scope")["all"], EXPECTED_D)


# Edges of the range form (metrics_product_analytics_range.sql), added to the golden fixture:
#   108: features 0 and 63 (the mask's first and last bits) on 01-01; feature 0 again 30 days
#        later (01-31: one run), feature 63 again 31 days later (02-01: two runs); active on
#        01-31, 02-01 and 02-02..02-13, so a power user from 02-12 ([01-13, 02-12) holds 12 of
#        those days) to 03-04 ([02-02, 03-04) holds 12; 03-05's window starts on 02-03).
#   109: features 100 and 200 (outside the masks) on 01-05, 100 again on 02-04 (30 days later)
#        and 200 on 02-05 (31 days later).
#   110: active on 01-10 and 02-10, 31 days apart; 111 on 01-12, 01-20 (8 days later) and 03-22
#        (61 days later): one day more than each window (30, 7 and 60 days) between two runs.
#   103: sessions without events on 01-20 (103 is a monthly active user on the days
#        01-21..02-08 of its window, from its event on 01-09) and on 02-20 (inactive then);
#   101: a session without events on 02-09, between its active days 02-08 and 02-10.
EDGES = """
insert into raw.users (user_id, customer_id, created_at, activated_at, deactivated_at) values
(108, 1, '2025-06-02 00:00+00', '2025-06-03 00:00+00', null),
(109, 1, '2025-06-02 00:00+00', '2025-06-03 00:00+00', null),
(110, 1, '2025-06-02 00:00+00', '2025-06-03 00:00+00', null),
(111, 1, '2025-06-02 00:00+00', '2025-06-03 00:00+00', null);
insert into raw.product_events (event_id, session_id, user_id, occurred_at, event_type, feature_id) values
(80001, 0, 108, '2026-01-01 09:00+00', 'view', 0),
(80002, 0, 108, '2026-01-01 09:01+00', 'view', 63),
(80003, 0, 108, '2026-01-31 09:00+00', 'view', 0),
(80004, 0, 108, '2026-02-01 09:00+00', 'view', 63),
(90001, 0, 109, '2026-01-05 09:00+00', 'view', 100),
(90002, 0, 109, '2026-01-05 09:01+00', 'view', 200),
(90003, 0, 109, '2026-02-04 09:00+00', 'view', 100),
(90004, 0, 109, '2026-02-05 09:00+00', 'view', 200),
(91001, 0, 110, '2026-01-10 09:00+00', 'view', null),
(91002, 0, 110, '2026-02-10 09:00+00', 'view', null),
(92001, 0, 111, '2026-01-12 09:00+00', 'view', null),
(92002, 0, 111, '2026-01-20 09:00+00', 'view', null),
(92003, 0, 111, '2026-03-22 09:00+00', 'view', null);
insert into raw.product_events (event_id, session_id, user_id, occurred_at, event_type, feature_id)
select 81000 + n, 0, 108, day + interval '9 hours', 'view', null
from generate_series('2026-02-02'::timestamptz, '2026-02-13', interval '1 day') with ordinality as t (day, n);
insert into raw.product_sessions (session_id, user_id, started_at, duration_seconds, platform) values
(31001, 103, '2026-01-20 10:00+00', 90, 'desktop'),
(31002, 103, '2026-02-20 10:00+00', 30, 'mobile'),
(31003, 101, '2026-02-09 10:00+00', 45, 'mobile');
"""


def _range_form_rows(conn, dates: list[date], run_id: str) -> dict[date, dict]:
    """Build `dates` through build_dates (the range form: asserted) and check every row
    against the per-date form's; returns the rows by date."""
    pipeline.refresh_states(conn, PA, dates)
    assert pipeline.uses_range_form(PA, dates, workers=2)
    assert pipeline.build_dates(conn, PA, dates, run_id=run_id) == dict.fromkeys(dates, 1)
    cols = ", ".join(PA.built_columns)
    per_date = pipeline.build_select(PA)
    rows = {r[0]: r for r in conn.execute(
        f"select {cols} from metrics_staging.{PA.table} where stage_id = %s order by metric_date",  # noqa: S608
        (pipeline.stage_key(run_id),))}
    assert list(rows) == dates
    for d in dates:
        assert rows[d] == conn.execute(f"select {cols} from ({per_date}) as q", {"metric_date": d}).fetchone(), d  # noqa: S608
    return {d: dict(zip(PA.built_columns, r, strict=True)) for d, r in rows.items()}


def test_the_range_form_gives_the_per_date_rows_on_every_date(conn, monkeypatch):
    """The range path builds many dates in one statement (the range form): on every date from
    2025-11-20 to 2026-03-31 it gives exactly the per-date form's row: the hand-computed ones
    above, then with the edges added (runs of features 30 and 31 days apart, the mask's bits 0
    and 63, features outside it, a power user's first and last day, sessions without events)."""
    load_fixture(conn, "product_analytics_golden.sql")
    pipeline.ensure_schema(conn)
    dates = [date(2025, 11, 20) + timedelta(days=i) for i in range(132)]
    # a dense range takes the range form on its own; three scattered dates, or "never", do not
    assert not pipeline.uses_range_form(PA, [date(2025, 12, 1), date(2026, 1, 10), D], workers=2)
    monkeypatch.setenv("METRICS_RANGE_FORM", "never")
    assert not pipeline.uses_range_form(PA, dates, workers=2)
    monkeypatch.delenv("METRICS_RANGE_FORM")

    rows = _range_form_rows(conn, dates, "range-form")
    _check(rows[D], EXPECTED_D)
    _check(rows[date(2026, 1, 10)], EXPECTED_JAN)
    _check(rows[date(2025, 12, 1)], EXPECTED_EMPTY)

    conn.execute(EDGES)
    rows = _range_form_rows(conn, dates, "range-form-edges")
    # 108 is the only power user of February (02-12 .. 03-04, 21 dates); 101 is one on D only
    power = [d for d in dates if rows[d]["power_users"] > 0]
    assert power == [date(2026, 2, 12) + timedelta(days=i) for i in range(21)] + [D]
    assert {rows[d]["power_users"] for d in power} == {1}
