"""Golden tests: every marketing metric on a tiny hand-built fixture
(tests/fixtures/marketing_golden.sql), expected values worked out by hand below."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from helpers import load_fixture, rows_by_key, table_dump
from metrics_layer import pipeline, validation
from metrics_layer.registry import load_registry

MK = load_registry()["marketing"]
D = date(2026, 3, 10)
TABLE = "entity.metrics_marketing"

# D = 2026-03-10: 30d window [02-08, 03-10), 90d MQL cohort [2025-12-10, 03-10).
# Spend in the window: Google 100 (02-08, first day) + 200 (03-09) = 300 (999 on 02-07 and 555 on
#   D are outside); Meta 50; LinkedIn 0 (its 400 is from 01-15); TikTok 25, a platform without
#   columns -> other_platforms_spend 25. Total = 300 + 50 + 0 + 25 = 375.
# Won deals closed in the window, by the platform of their lead's campaign:
#   Google: opp 1 (1200, 03-05) + opp 7 (300, 02-10) = 1500; opp 3 (800) closes on D: excluded.
#   TikTok: opp 4 (100, 02-08 00:00). Email (no platform): opp 2 (5000). Outbound opp 5 (no
#   lead) and the lost opp 6 are not attributed.
#   google_ads_roi = (1500 - 300) / 300 = 4; meta_ads_roi = (0 - 50) / 50 = -1;
#   linkedin_ads_roi = NULL (no spend); overall_roi = (1500 + 100 - 375) / 375 = 3.2667.
# MQLs in the window: leads 12 (02-08 00:00), 13, 15 -> 3 (16 qualified at 02-07 23:59, 19 on D).
#   cost_per_mql = 375 / 3 = 125.
# 90d cohort: leads 11, 12, 13, 14 (12-10 00:00), 15, 16 = 6 (18 qualified 12-09); converted
#   before D: 11, 12, 14 (13 converts on D) -> lead_conversion_rate = 3/6 = 0.5.
# Conversions in the window: leads 11, 12, 14, 18 (13 converts on D) = 4.
#   Touches up to the conversion: 11 -> 3 (paid_search, email, paid_search at the conversion
#   instant; the events touch after it is ignored), 12 -> 2 (email, events), 14 -> 1
#   (paid_social), 18 -> 0. avg_touchpoints_to_conversion = 6 / 4 = 1.5.
#   Linear credit: paid_search 2/3, email 1/3 + 1/2 = 5/6, events 1/2, paid_social 1.
#   Ranked: paid_social 1/4 = 0.25, email (5/6)/4 = 0.2083, paid_search (2/3)/4 = 0.1667.
# Website sessions in the window: #1 (02-08 00:00), #2 (03-09 23:59), #5, #6 = 4 (#3 before, #4
#   on D); bounced #2, #6 -> 0.5; converted #1 -> 0.25.
# New customers created in the window: 101, 102, 104 (02-08 00:00), 105, 107 = 5 (103 on D,
#   106 long ago) -> customer_acquisition_cost = 375 / 5 = 75.
# Spend of the last complete day D-1 = 03-09: 200 (Google) -> ad_spend_1d = 200 (the 555 of D
#   itself is after the snapshot).
EXPECTED = {
    "total_ad_spend_active": Decimal("375.00"), "ad_spend_1d": Decimal("200.00"),
    "google_ads_spend": Decimal("300.00"), "google_ads_roi": Decimal("4.0000"),
    "meta_ads_spend": Decimal("50.00"), "meta_ads_roi": Decimal("-1.0000"),
    "linkedin_ads_spend": Decimal("0"), "linkedin_ads_roi": None,
    "other_platforms_spend": Decimal("25.00"), "overall_roi": Decimal("3.2667"),
    "total_mqls": 3, "lead_conversion_rate": Decimal("0.5000"), "cost_per_mql": Decimal("125.00"),
    "avg_touchpoints_to_conversion": Decimal("1.50"),
    "top_channel_1": "paid_social", "top_channel_1_share": Decimal("0.2500"),
    "top_channel_2": "email", "top_channel_2_share": Decimal("0.2083"),
    "top_channel_3": "paid_search", "top_channel_3_share": Decimal("0.1667"),
    "website_sessions": 4, "bounce_rate": Decimal("0.5000"),
    "website_conversion_rate": Decimal("0.2500"), "customer_acquisition_cost": Decimal("75.00"),
}


def _build(conn, metric_date=D):
    pipeline.refresh_domain(conn, MK, metric_date, run_id="golden")
    rows = rows_by_key(conn, TABLE, metric_date, "marketing_scope")
    assert list(rows) == ["all"], "exactly one row per metric_date"
    return rows["all"]


def test_every_metric_matches_hand_computed_values(conn):
    load_fixture(conn, "marketing_golden.sql")
    row = _build(conn)
    assert {k: row[k] for k in EXPECTED} == EXPECTED
    # the registry lists exactly these implemented metrics, in this order
    assert [m.name for m in MK.implemented] == list(EXPECTED)


def test_placeholders_exist_as_null_columns(conn):
    load_fixture(conn, "marketing_golden.sql")
    row = _build(conn)
    assert {m.name: m.requires for m in MK.placeholders} == {
        "email_open_rate": "Email platform API", "social_engagement_rate": "Social platform APIs",
        "brand_awareness_score": "Survey data", "lifetime_value_cac_ratio": "LTV modeling"}
    assert all(row[m.name] is None for m in MK.placeholders)


def test_the_window_moves_by_one_day(conn):
    load_fixture(conn, "marketing_golden.sql")
    # D = 03-11: window [02-09, 03-11). Google: 200 (03-09) + 555 (03-10) = 755, the 100 of 02-08
    #   drops out. MQLs: 13, 15, 19 (03-10 01:00) = 3 (12 at 02-08 00:00 drops out).
    #   Sessions: #2, #4 (03-10), #5, #6 = 4; bounced #2, #6 = 0.5; converted #4 = 0.25.
    #   Conversions: 11, 12, 13 (03-10 08:00), 18 = 4 (14 at 02-08 00:00 drops out); new
    #   customers 101, 102, 103, 105, 107 = 5.
    row = _build(conn, date(2026, 3, 11))
    assert (row["google_ads_spend"], row["total_ad_spend_active"]) == (Decimal("755.00"), Decimal("830.00"))
    assert (row["total_mqls"], row["website_sessions"]) == (3, 4)
    assert (row["bounce_rate"], row["website_conversion_rate"]) == (Decimal("0.5000"), Decimal("0.2500"))
    # touches: 11 -> 3, 12 -> 2, 13 -> 1 (paid_search), 18 -> 0: 6 / 4 = 1.5; credit paid_search
    #   2/3 + 1 = 5/3, email 5/6, events 1/2 -> shares 0.4167, 0.2083, 0.125
    assert row["avg_touchpoints_to_conversion"] == Decimal("1.50")
    assert [(row[f"top_channel_{i}"], row[f"top_channel_{i}_share"]) for i in (1, 2, 3)] == [
        ("paid_search", Decimal("0.4167")), ("email", Decimal("0.2083")), ("events", Decimal("0.1250"))]
    # Google revenue: opp 1 (1200), 3 (800, 03-10), 7 (300) = 2300 -> (2300 - 755) / 755 = 2.0464;
    #   the TikTok deal (02-08) and spend are outside now: overall (2300 - 830) / 830 = 1.7711
    assert (row["google_ads_roi"], row["overall_roi"]) == (Decimal("2.0464"), Decimal("1.7711"))
    assert row["customer_acquisition_cost"] == Decimal("166.00")  # 830 / 5


def test_a_date_with_no_activity_gives_zero_counts_and_null_ratios(conn):
    load_fixture(conn, "marketing_golden.sql")
    # 2025-11-01: no spend, lead, conversion, session or new customer in any window
    row = _build(conn, date(2025, 11, 1))
    zero = {"total_ad_spend_active": 0, "ad_spend_1d": 0, "google_ads_spend": 0, "meta_ads_spend": 0,
            "linkedin_ads_spend": 0, "other_platforms_spend": 0, "total_mqls": 0, "website_sessions": 0}
    assert {k: row[k] for k in zero} == zero
    nulls = [m.name for m in MK.implemented if m.name not in zero]
    assert {k: row[k] for k in nulls} == dict.fromkeys(nulls)


def test_spend_on_an_unregistered_platform_is_counted_and_fails_the_suite(conn):
    load_fixture(conn, "marketing_golden.sql")
    pipeline.stage(conn, MK, D)
    summary = validation.validate_day(MK, D)
    # the TikTok 25 is in the total (375) and every other check passes: only the guard fails
    assert [(f.expectation, f.column) for f in summary.failures] == [
        ("expect_column_values_to_be_between", "other_platforms_spend")]
    # once the spend is gone (or the platform gets its columns) the day validates
    conn.execute("delete from raw.ad_spend_daily where platform = 'tiktok_ads'")
    pipeline.build_staging(conn, MK, D)
    summary = validation.validate_day(MK, D)
    assert summary.success, summary.describe()


def test_rerunning_a_date_gives_identical_rows(conn):
    load_fixture(conn, "marketing_golden.sql")
    _build(conn)
    first = table_dump(conn, TABLE)
    _build(conn, date(2026, 3, 9))
    _build(conn)
    assert [r for r in table_dump(conn, TABLE) if "2026-03-10" in r[0]] == first


def test_attribution_uses_todays_campaign_and_amount_so_a_rebuild_rewrites_past_roi(conn):
    # The sources keep no history (registry as_of, docs/sources.md): a lead's campaign and a
    # deal's amount are today's values.
    load_fixture(conn, "marketing_golden.sql")
    row = _build(conn)
    assert (row["google_ads_roi"], row["meta_ads_roi"], row["overall_roi"]) == (
        Decimal("4.0000"), Decimal("-1.0000"), Decimal("3.2667"))
    # after D: lead 11 is re-attributed from the Google campaign (1) to the Meta one (2), and its
    # won opp 1 is amended from 1200 to 2200
    conn.execute("update raw.leads set campaign_id = 2 where lead_id = 11")
    conn.execute("update raw.opportunities set amount = 2200 where opportunity_id = 1")
    # the published day keeps the values it was built with ...
    published = rows_by_key(conn, TABLE, D, "marketing_scope")["all"]
    assert published["google_ads_roi"] == Decimal("4.0000")
    # ... until D is rebuilt: Google keeps opp 7 (300): (300 - 300) / 300 = 0; Meta gets opp 1
    #   at today's 2200: (2200 - 50) / 50 = 43; overall (300 + 2200 + 100 - 375) / 375 = 5.9333.
    #   Spend, MQLs and touchpoint channels do not move.
    pipeline.refresh_domain(conn, MK, D, run_id="backfill")
    row = rows_by_key(conn, TABLE, D, "marketing_scope")["all"]
    assert (row["google_ads_roi"], row["meta_ads_roi"], row["overall_roi"]) == (
        Decimal("0.0000"), Decimal("43.0000"), Decimal("5.9333"))
    assert (row["total_ad_spend_active"], row["total_mqls"], row["top_channel_1"]) == (
        Decimal("375.00"), 3, "paid_social")
