"""Exact arithmetic, rounded once: values that are exact ties must be treated as ties.

numeric division carries about 20 significant digits, so a sum of divisions drifts below the
exact value (1/3 + 1/3 + 1/3 = 0.99999999999999999999): a .xx5 average then rounds one cent low,
and channels with equal attribution are ranked by that noise instead of by name.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from helpers import load_fixture, rows_by_key
from metrics_layer import pipeline
from metrics_layer.registry import load_registry

REGISTRY = load_registry()
D = date(2026, 3, 10)


def test_the_average_sales_cycle_is_one_exact_division(conn):
    load_fixture(conn, "sales_golden.sql")
    # rep 9 won two deals in the 90 days, with cycles of 35 h and 19 h: 1.458333... and
    # 0.791666... days; the exact average is 54 h / 2 = 27 h = 1.125 days, published rounded half
    # away from zero to 1.13 (averaging the per-deal divisions gives 1.1249999... -> 1.12)
    conn.execute("insert into raw.sales_reps (rep_id, rep_name, team, hired_at, left_at) values "
                 "(9, 'Ida Exact', 'smb', '2025-01-01 00:00+00', null)")
    conn.execute(
        "insert into raw.opportunities (opportunity_id, rep_id, lead_id, customer_id, amount, stage, "
        "created_at, closed_at) values "
        "(901, 9, null, null, 100.00, 'closed_won', '2026-03-01 00:00+00', '2026-03-02 11:00+00'), "
        "(902, 9, null, null, 100.00, 'closed_won', '2026-03-03 00:00+00', '2026-03-03 19:00+00')")
    pipeline.refresh_domain(conn, REGISTRY["sales"], D, "exact")
    row = rows_by_key(conn, "entity.metrics_sales", D, "rep_id")[9]
    assert row["avg_sales_cycle_days"] == Decimal("1.13")


def test_channels_with_equal_credit_are_ranked_by_name(conn):
    load_fixture(conn, "marketing_golden.sql")
    # the four conversions of the 30 days [02-08, 03-10): leads 11, 12 and 14 each touched
    # direct, referral and webinar (1/3 credit each, so 3 x 1/3 = exactly 1 per channel); lead
    # 18 touched zeta_partner only (1). Four channels tied at 1: ranked by name, each 1/4 share.
    conn.execute("delete from raw.attribution_touchpoints")
    conn.execute(
        "insert into raw.attribution_touchpoints (touchpoint_id, lead_id, customer_id, channel, touched_at) "
        "select row_number() over (), l.lead_id, l.customer_id, c.channel, '2026-02-01 00:00+00' "
        "from raw.leads as l cross join (values ('direct'), ('referral'), ('webinar')) as c (channel) "
        "where l.lead_id in (11, 12, 14)")
    conn.execute("insert into raw.attribution_touchpoints (touchpoint_id, lead_id, customer_id, channel, "
                 "touched_at) values (99, 18, 105, 'zeta_partner', '2026-02-01 00:00+00')")
    pipeline.refresh_domain(conn, REGISTRY["marketing"], D, "exact")
    row = conn.execute("select top_channel_1, top_channel_1_share, top_channel_2, top_channel_2_share, "
                       "top_channel_3, top_channel_3_share from entity.metrics_marketing "
                       "where metric_date = %s", (D,)).fetchone()
    assert row == ("direct", Decimal("0.2500"), "referral", Decimal("0.2500"),
                   "webinar", Decimal("0.2500"))
