"""entity.metrics_api: the time comparisons of every unified value, golden rules by hand.

Inputs are hand-built, published rows of the domain tables (what metrics_api is built from,
besides the catalog); the SQL under test is sql/api/*.sql through pipeline.build_api, and an end
to end test runs the real fan-in on published days.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from helpers import load_fixture, put_values
from metrics_layer import pipeline
from metrics_layer.registry import load_registry

REGISTRY = load_registry()


@pytest.fixture
def schema(conn):
    pipeline.ensure_schema(conn)
    return conn


def _put(conn, domain: str, metric: str, values: dict, entity: str = "all") -> None:
    """Published values of one entity's metric in its domain table: {metric_date: value}."""
    put_values(conn, REGISTRY[domain], metric, values, entity)


def _api(conn, domain: str, metric: str, d: date, entity: str = "all") -> dict:
    with conn.cursor() as cur:
        cur.execute("select * from entity.metrics_api where domain = %s and metric_name = %s "
                    "and metric_date = %s and entity_id = %s", (domain, metric, d, entity))
        row = cur.fetchone()
        assert row is not None, (domain, metric, d)
        return dict(zip([c.name for c in cur.description], row, strict=True))


def _build(conn, domain: str, dates, at_once: bool = False) -> list[date]:
    with conn.transaction(), conn.cursor() as cur:
        return pipeline.build_api(cur, REGISTRY[domain], sorted(dates), at_once=at_once)


# Built together, a month's dates are one statement, each comparison joining a month of earlier
# values; built one date a time (the daily run), one date each; built months at once (each month
# on a connection of its own, its comparisons with other months read from the domain table): the
# same golden values every way.
@pytest.mark.parametrize("how", ["months-together", "one-date-a-build", "months-at-once"])
def test_month_ends_leap_days_and_the_weekday_aligned_year(schema, how, caplog):
    dau = {date(2024, 2, 29): 29, date(2024, 3, 31): 331,   # a leap year
           date(2025, 2, 28): 28, date(2025, 3, 11): 311,
           date(2026, 2, 28): 10, date(2026, 3, 28): 9, date(2026, 3, 29): 11, date(2026, 3, 30): 12,
           date(2026, 3, 31): 15, date(2026, 3, 10): 20, date(2026, 3, 9): 0, date(2026, 3, 3): 25,
           date(2027, 2, 28): 7, date(2028, 2, 29): 14}
    _put(schema, "product", "daily_active_users", dau)
    if how == "one-date-a-build":
        for d in sorted(dau):
            assert _build(schema, "product", [d]) == [d]
    else:
        caplog.set_level("INFO", logger="metrics_layer.pipeline")
        _build(schema, "product", dau, at_once=how == "months-at-once")
        # eight months with no partition yet: built on two connections at once, or one by one
        at_once = [r.getMessage().rsplit(" in ", 1)[0] for r in caplog.records if "connections" in r.getMessage()]
        assert at_once == (["entity.metrics_api: built 8 month(s) of product on 2 connections and attached them"]
                           if how == "months-at-once" else [])
    # the 28th to the 31st of March all compare with February's last day (MetricFlow's 31st has none)
    for day, value, pct in ((28, 9, Decimal("-10.00")), (29, 11, Decimal("10.00")),
                            (30, 12, Decimal("20.00")), (31, 15, Decimal("50.00"))):
        row = _api(schema, "product", "daily_active_users", date(2026, 3, day))
        assert (row["value_1m_ago"], row["change_1m"], row["pct_change_1m"]) == (10, value - 10, pct)
    # 2024-03-31 - 1 month = 2024-02-29; 2025-02-28 - 1 year = 2024-02-28 (no row: NULL, not 0)
    assert _api(schema, "product", "daily_active_users", date(2024, 3, 31))["value_1m_ago"] == 29
    row = _api(schema, "product", "daily_active_users", date(2025, 2, 28))
    assert (row["value_1y_ago"], row["change_1y"], row["pct_change_1y"]) == (None, None, None)
    # a leap day a year on: 2028-02-29 - 1 year = 2027-02-28, which has a row; 2027-02-28 - 1 year
    # = 2026-02-28
    row = _api(schema, "product", "daily_active_users", date(2028, 2, 29))
    assert (row["value_1y_ago"], row["change_1y"], row["pct_change_1y"]) == (7, 7, Decimal("100.00"))
    assert _api(schema, "product", "daily_active_users", date(2027, 2, 28))["value_1y_ago"] == 10
    row = _api(schema, "product", "daily_active_users", date(2026, 3, 10))
    # 2026-03-10 is a Tuesday; 364 days earlier, 2025-03-11, is a Tuesday too
    assert date(2026, 3, 10).weekday() == date(2025, 3, 11).weekday() == 1
    assert (row["value_364d_ago"], row["change_364d"], row["pct_change_364d"]) == (311, -291, Decimal("-93.57"))
    assert row["value_1y_ago"] is None  # 2025-03-10 has no row
    # 1 day earlier has value 0: change 20, percent change NULL (never infinity or an error)
    assert (row["value_1d_ago"], row["change_1d"], row["pct_change_1d"]) == (0, 20, None)
    assert (row["value_7d_ago"], row["change_7d"], row["pct_change_7d"]) == (25, -5, Decimal("-20.00"))
    # DAU is higher-is-better: 20 after 0 is an improvement; 9 after nothing on 03-27 has no verdict
    assert row["is_improving"] is True
    assert _api(schema, "product", "daily_active_users", date(2026, 3, 28))["is_improving"] is None
    assert _api(schema, "product", "daily_active_users", date(2026, 3, 29))["is_improving"] is True


def test_direction_decides_improvement(schema):
    _put(schema, "customer_success", "churn_risk_score", {date(2026, 3, 1): 40, date(2026, 3, 2): 35},
         entity="7")
    _put(schema, "marketing", "total_ad_spend_active", {date(2026, 3, 1): 100, date(2026, 3, 2): 150})
    _build(schema, "customer_success", [date(2026, 3, 1), date(2026, 3, 2)])
    _build(schema, "marketing", [date(2026, 3, 1), date(2026, 3, 2)])
    churn = _api(schema, "customer_success", "churn_risk_score", date(2026, 3, 2), entity="7")
    assert (churn["direction"], churn["is_improving"], churn["pct_change_1d"]) == (
        "lower_is_better", True, Decimal("-12.50"))
    spend = _api(schema, "marketing", "total_ad_spend_active", date(2026, 3, 2))
    assert (spend["direction"], spend["is_improving"]) == ("neutral", None)


def test_period_to_date_totals_of_an_additive_metric(schema):
    assert REGISTRY["marketing"].metric("ad_spend_1d").additive
    # daily spend: the value of metric_date X is the spend of day X-1. Jan 1 .. Mar 5, 2026, plus
    # Dec 31, 2025 (metric_date 2026-01-01) and the same stretch a year before.
    spend = {}
    for year in (2025, 2026):
        d = date(year - 1, 12, 31)
        while d <= date(year, 3, 5):
            spend[d + timedelta(days=1)] = Decimal(d.day)  # the spend of day d is its day of month
            d += timedelta(days=1)
    _put(schema, "marketing", "ad_spend_1d", spend)
    _build(schema, "marketing", spend)
    row = _api(schema, "marketing", "ad_spend_1d", date(2026, 3, 4))
    # snapshot of 03-03: MTD = March 1..3 = 1 + 2 + 3 = 6; prior MTD = February 1..3 = 6
    # QTD = Jan 1..Mar 3 = 496 (31 x 32 / 2) + 406 (28 x 29 / 2) + 6 = 908; prior QTD = the
    #   days Oct 1..Dec 3, 2025, none of which has a row (the 2025 rows stop on Mar 5): NULL
    # YTD = 908; prior YTD = Jan 1..Mar 3, 2025 = 908 (2025 is not a leap year either)
    assert (row["mtd_total"], row["prior_mtd_total"]) == (6, 6)
    assert (row["qtd_total"], row["prior_qtd_total"]) == (908, None)
    assert (row["ytd_total"], row["prior_ytd_total"]) == (908, 908)
    # on the 1st the period is the month of D-1: 2026-03-01 -> all of February (406); prior MTD =
    # January 1..28 (the same day of month, clamped) = 406
    first = _api(schema, "marketing", "ad_spend_1d", date(2026, 3, 1))
    assert (first["mtd_total"], first["prior_mtd_total"]) == (406, 406)
    # a late correction of 03-01's spend (metric_date 03-02): 1 -> 101. The dates after it keep
    # their own values and their totals take the new one: MTD of 03-04 = 101 + 2 + 3 = 106
    _put(schema, "marketing", "ad_spend_1d", {date(2026, 3, 2): Decimal(101)})
    assert _build(schema, "marketing", [date(2026, 3, 2)])[:3] == [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
    row = _api(schema, "marketing", "ad_spend_1d", date(2026, 3, 4))
    assert (row["metric_value"], row["mtd_total"], row["ytd_total"], row["prior_mtd_total"]) == (3, 106, 1008, 6)
    # a non-additive metric gets no totals
    _put(schema, "marketing", "total_ad_spend_active", {date(2026, 3, 4): 1})
    _build(schema, "marketing", [date(2026, 3, 4)])
    assert _api(schema, "marketing", "total_ad_spend_active", date(2026, 3, 4))["mtd_total"] is None


def test_only_the_affected_dates_and_those_pointing_at_them_are_rebuilt(schema):
    days = [date(2026, 2, 28) + timedelta(days=i) for i in range(40)]  # 02-28 .. 04-08
    _put(schema, "product", "daily_active_users", dict.fromkeys(days, 1))
    assert _build(schema, "product", days) == days  # the first build: every published date
    assert _build(schema, "product", [date(2026, 2, 28)]) == [
        date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 7),       # itself, +1 day, +7 days
        date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30), date(2026, 3, 31)]  # + 1 month
    # an additive metric's domain also rebuilds the later dates of its period totals
    _put(schema, "marketing", "ad_spend_1d", dict.fromkeys(days, 1))
    _build(schema, "marketing", days)
    assert len(_build(schema, "marketing", [date(2026, 3, 15)])) == 25  # 03-15 .. 04-08


def test_a_republished_date_reaches_the_comparisons_of_the_dates_after_it(schema):
    """A domain republishes 03-01 (a late correction): it is rebuilt from the domain table, and
    the dates that compare with it keep their own values (read back from metrics_api) against the
    new base, on both sides of a month's edge."""
    days = {date(2026, 3, 1): 10, date(2026, 3, 2): 20, date(2026, 3, 8): 30, date(2026, 4, 1): 40}
    _put(schema, "product", "daily_active_users", days)
    _build(schema, "product", days)
    assert _api(schema, "product", "daily_active_users", date(2026, 3, 2))["value_1d_ago"] == 10
    _put(schema, "product", "daily_active_users", {date(2026, 3, 1): 16})
    assert _build(schema, "product", [date(2026, 3, 1)]) == list(days)
    assert _api(schema, "product", "daily_active_users", date(2026, 3, 1))["metric_value"] == 16
    one_day = _api(schema, "product", "daily_active_users", date(2026, 3, 2))
    assert (one_day["metric_value"], one_day["value_1d_ago"], one_day["pct_change_1d"]) == (20, 16, Decimal("25.00"))
    week = _api(schema, "product", "daily_active_users", date(2026, 3, 8))
    assert (week["metric_value"], week["value_7d_ago"], week["pct_change_7d"]) == (30, 16, Decimal("87.50"))
    month = _api(schema, "product", "daily_active_users", date(2026, 4, 1))
    assert (month["metric_value"], month["value_1m_ago"], month["pct_change_1m"]) == (40, 16, Decimal("150.00"))
    # the slice records the publication it read
    assert schema.execute("select source_version = (select version from metrics_ops.publish_log where "
                          "target = 'metrics_product_analytics' and metric_date = '2026-03-01') from "
                          "metrics_ops.unified_slices where domain = 'product' and metric_date = '2026-03-01'"
                          ).fetchone()[0] is True


def test_the_fan_in_maintains_metrics_api(conn):
    load_fixture(conn, "product_analytics_golden.sql")
    product = REGISTRY["product"]
    for d in (date(2026, 3, 9), date(2026, 3, 10)):
        pipeline.refresh_domain(conn, product, d, "golden")
    pipeline.build_unified(conn, "fan-in")
    # one row per non-null implemented metric value of the domain table
    values = conn.execute("select " + " + ".join(f"count({m.name})" for m in product.unified)  # noqa: S608
                          + f" from entity.{product.table}").fetchone()[0]
    assert conn.execute("select count(*) from entity.metrics_api").fetchone()[0] == values > 0
    # the bookkeeping counts each date's rows (from the statement's input, not by a recount)
    per_date = conn.execute("select metric_date, count(*) from entity.metrics_api group by 1").fetchall()
    assert sorted(per_date) == sorted(conn.execute(
        "select metric_date, row_count from metrics_ops.api_slices where domain = 'product'").fetchall())
    assert sum(n for _, n in per_date) == values
    row = _api(conn, "product", "daily_active_users", date(2026, 3, 10))
    before = _api(conn, "product", "daily_active_users", date(2026, 3, 9))
    assert row["value_1d_ago"] == before["metric_value"]
    assert row["change_1d"] == row["metric_value"] - before["metric_value"]


def test_a_rebuild_longer_than_a_chunk_compares_every_date(schema):
    """A rebuild of more dates than one statement takes (a month) refills the input tables for
    each month: every date, on both sides of a month's edge, has its own comparisons."""
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(40)]  # January and February 1-9
    _put(schema, "product", "daily_active_users", {d: i + 1 for i, d in enumerate(days)})
    assert _build(schema, "product", days) == days
    rows = schema.execute("select metric_date, metric_value, value_1d_ago, value_7d_ago from entity.metrics_api "
                          "where metric_name = 'daily_active_users' order by 1").fetchall()
    assert [r[0] for r in rows] == days
    for i, (_, value, one_day, seven_days) in enumerate(rows):
        assert value == i + 1
        assert one_day == (i if i >= 1 else None)
        assert seven_days == (i - 6 if i >= 7 else None)
