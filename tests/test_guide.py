"""The Metrics Layer Guide working as written: its four example queries (docs/guide_queries/,
verbatim) and its Superset calculated fields return the right rows on a hand-built fixture
(tests/fixtures/guide.sql) published for today, read as Superset would: through the read-only
role metrics_reader (UTC, `entity` on its search_path), and through the layer's own connect().

The guide filters `metric_date = CURRENT_DATE`, so the fixture's dates are relative to D =
today's UTC date; every window is relative too, so the expected values below, worked out by hand,
hold on any day (the sales MTD only sees deals closed on D-1, which every month of D-1 holds).

Published: customer_success for D-1 and D, product for D-31, D-30 and D, sales and marketing
for D, then the company overview (derived from those four) for D; then the fan-in
(metrics_unified_domains).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import psycopg
import pytest

from conftest import LAYER_SCHEMAS, ROOT, TEST_DB, _connect
from helpers import load_fixture
from metrics_layer import local, pipeline
from metrics_layer.dates import utc_today
from metrics_layer.registry import load_registry

GUIDE_QUERIES = ROOT / "docs" / "guide_queries"
REGISTRY = load_registry()  # the source domains, then the derived ones (built from them)


@dataclass(frozen=True)
class Published:
    conn: psycopg.Connection   # postgres, owner of the fixture
    reader: psycopg.Connection  # metrics_reader, what Superset connects as
    d: date                     # today (UTC) = the guide's CURRENT_DATE


@pytest.fixture(scope="module")
def published(pg_server):
    conn = _connect(pg_server)
    for schema in LAYER_SCHEMAS:
        conn.execute(f"drop schema if exists {schema} cascade")
    d = utc_today()
    conn.execute("select set_config('guide.d', %s, false)", (d.isoformat(),))
    load_fixture(conn, "guide.sql")
    runs = [("product", d - timedelta(days=31)), ("product", d - timedelta(days=30)),
            ("customer_success", d - timedelta(days=1))] + [(name, d) for name in REGISTRY]
    for name, day in runs:
        assert pipeline.refresh_domain(conn, REGISTRY[name], day, "guide") > 0, (name, day)
    assert pipeline.build_unified(conn)
    reader = psycopg.connect(host=local.socket_dir(pg_server), user="metrics_reader", dbname=TEST_DB,
                             autocommit=True)
    yield Published(conn, reader, d)
    reader.close()
    conn.close()


def guide_query(name: str) -> str:
    return (GUIDE_QUERIES / f"{name}.sql").read_text()


def run_guide(c: psycopg.Connection, d: date, name: str) -> list[tuple]:
    assert c.execute("select current_date").fetchone()[0] == d, "the UTC day changed during the test"
    return c.execute(guide_query(name)).fetchall()


def q4(value) -> Decimal | None:
    return None if value is None else Decimal(value).quantize(Decimal("0.0001"))


# ---------------------------------------------------------------------------- the four queries

# Customer health on D. Customers 4..12 have no seat and fewer than 3 tickets: health = their one
# device's reading of D-1 (weight 0.20 of 0.20).
#   Acme (1): seats 11, 12, 13; active in [D-7, D): 11 -> engagement 100/3 (0.35); core features
#     used in [D-30, D): 1 (11 on D-1), 2 (11 on D-10) of 2 -> adoption 100 (0.25); device 90
#     (0.20) -> (0.35 x 100/3 + 0.25 x 100 + 0.20 x 90) / 0.80 = (35/3 + 43) / 0.8 = 68.333 -> 68.33
#   Bolt (2): seat 21 active on D-1 -> engagement 100; core feature 1 of 2 -> 50; no device
#     -> (35 + 12.5) / 0.60 = 79.166 -> 79.17
#   Crane (3) 85.00 (reading of D-1; 70.00 on D-2), Dyna (4) 80.00, Echo (5) 60.00, Fjord (6)
#   59.99, Gale (7) 12.50, Hale (8) 40.00, Iris (9) 30.00, Jade (10) 45.50, Lumen (12) 99.51.
#   Kilo (11): no seat, 2 tickets, no device: no evidence -> NULL. Zed (13) churned on D-2.
HEALTH = {"Acme Corp": "68.33", "Bolt Ltd": "79.17", "Crane Co": "85.00", "Dyna": "80.00",
          "Echo": "60.00", "Fjord": "59.99", "Gale": "12.50", "Hale": "40.00", "Iris": "30.00",
          "Jade": "45.50", "Kilo": None, "Lumen": "99.51"}


def test_basic_query_lists_the_ten_lowest_health_scores(published):
    rows = run_guide(published.reader, published.d, "01_basic_query")
    # ascending, NULLs last (PostgreSQL's default for ASC): of the 12 active customers, Lumen
    # (99.51, the 11th) and Kilo (no score, the 12th) fall past LIMIT 10; Zed is not active
    assert rows == [(published.d, name, Decimal(HEALTH[name])) for name in (
        "Gale", "Iris", "Hale", "Jade", "Fjord", "Echo", "Acme Corp", "Bolt Ltd", "Dyna", "Crane Co")]


# Domain overview on D, tier_1 only: (domain, metric, avg to 4 places, entities with a value),
# in the guide's order (domain, then avg descending; equal averages by name here).
# company (one row, 'all', from the four tables below): total_mrr 4645.50, active_customers 12,
#   avg_health_score 60.00, at_risk_customers 6 and mrr_at_risk 495.50 (as the guide's 'At Risk'
#   below), total_pipeline_value 12000, revenue_closed_mtd 1500; company-wide over 90 days:
#   won 900 + 2000 + 600 = 3500 of 3 deals, lost 2 -> coverage 12000 / 3500 = 3.4286, win rate
#   3/5 = 0.6; product and marketing KPIs copied (3, 12, 0.25; 600, 0.5, 3, 300).
#   mrr_mom_growth_pct is NULL (customer success is not published for D - 1 month): not listed.
# customer_success (12 active customers; NULLs are not in the unified table):
#   current_mrr: 1200 + 400 + 300 + 250 + 0 + 150 + 100 + 100 + 50 + 75.50 + 20 + 2000 = 4645.50
#     / 12 = 387.125 (Echo has no subscription: 0.00 is a value)
#   customer_health_score: the 11 scores above sum to 660.00 / 11 = 60 (Kilo NULL)
#   churn_risk_score: 100 - health without last month's MRR (Crane 15.00, Echo 40.00, Fjord
#     40.01); with it, 0.7 x (100 - health) + 0.3 x contraction: Acme 0.7 x 31.67 = 22.17 (grew),
#     Bolt 0.7 x 20.83 + 0.3 x 20 (500 -> 400) = 20.58, Dyna 14.00, Gale 61.25, Hale 42.00,
#     Iris 49.00, Jade 38.15, Lumen 0.343 -> 0.34; sum 342.50 / 11 = 31.1364 (Kilo NULL)
#   monthly_active_users: Acme 3 (11, 12, 14), Bolt 3 (21, 22, 23), Dyna 3 (41-43), Gale 2
#     (71, 72), Kilo 1 (111), others 0 -> 12 / 12 = 1
# marketing (one row, 'all'): spend in [D-30, D) 600.00 (google_ads); MQLs in 30d: leads 1, 2, 4
#   = 3 -> 200.00 each; new customers in 30d: Crane, Kilo = 2 -> CAC 300.00; won revenue of paid
#   leads in 30d: opportunity 3 (lead 1) 900 -> ROI (900 - 600) / 600 = 0.5; MQLs in 90d: 1, 2,
#   3, 4, converted 1 -> 0.25; website sessions in 30d: 2..6 = 5, converted 2 and 4 -> 0.4;
#   no spend outside the three platforms -> 0.
# product (one row, 'all'): DAU on D-1 {11, 21, 41} = 3; WAU [D-7, D) {11, 21, 22, 41, 42, 43,
#   71, 72} = 8; MAU [D-30, D) those + {12, 14, 23, 111} = 12; 3/12 = 0.25, 8/12 = 0.6667.
# sales (reps Ana, Ben, Cleo):
#   total_pipeline_value: Ana 5000 + 3000, Ben 4000, Cleo 0 -> 12000 / 3 = 4000
#   revenue_closed_mtd (won on D-1): Ana 900, Ben 0, Cleo 600 -> 1500 / 3 = 500
#   pipeline_coverage_ratio: Ana 8000 / (900 + 2000 won in 90d) = 2.7586, Cleo 0 / 600 = 0,
#     Ben won nothing: NULL -> 2.7586 / 2 = 1.3793
#   open_opportunities: 2 + 1 + 0 = 3 / 3 = 1; deals_won_mtd 1 + 0 + 1 = 2 / 3 = 0.6667
#   win_rate: Ana 2 won of 3 closed = 0.6667, Ben 0 of 1 = 0, Cleo 1 of 1 = 1 -> 1.6667 / 3 = 0.5556
OVERVIEW = [
    ("company", "total_pipeline_value", "12000.0000", 1),
    ("company", "total_mrr", "4645.5000", 1),
    ("company", "revenue_closed_mtd", "1500.0000", 1),
    ("company", "total_ad_spend", "600.0000", 1),
    ("company", "mrr_at_risk", "495.5000", 1),
    ("company", "customer_acquisition_cost", "300.0000", 1),
    ("company", "avg_health_score", "60.0000", 1),
    ("company", "active_customers", "12.0000", 1),
    ("company", "monthly_active_users", "12.0000", 1),
    ("company", "at_risk_customers", "6.0000", 1),
    ("company", "pipeline_coverage_ratio", "3.4286", 1),
    ("company", "daily_active_users", "3.0000", 1),
    ("company", "total_mqls", "3.0000", 1),
    ("company", "win_rate", "0.6000", 1),
    ("company", "overall_roi", "0.5000", 1),
    ("company", "dau_mau_ratio", "0.2500", 1),
    ("customer_success", "current_mrr", "387.1250", 12),
    ("customer_success", "customer_health_score", "60.0000", 11),
    ("customer_success", "churn_risk_score", "31.1364", 11),
    ("customer_success", "monthly_active_users", "1.0000", 12),
    ("marketing", "total_ad_spend_active", "600.0000", 1),
    ("marketing", "customer_acquisition_cost", "300.0000", 1),
    ("marketing", "cost_per_mql", "200.0000", 1),
    ("marketing", "website_sessions", "5.0000", 1),
    ("marketing", "total_mqls", "3.0000", 1),
    ("marketing", "overall_roi", "0.5000", 1),
    ("marketing", "website_conversion_rate", "0.4000", 1),
    ("marketing", "lead_conversion_rate", "0.2500", 1),
    ("marketing", "other_platforms_spend", "0.0000", 1),
    ("product", "monthly_active_users", "12.0000", 1),
    ("product", "weekly_active_users", "8.0000", 1),
    ("product", "daily_active_users", "3.0000", 1),
    ("product", "wau_mau_ratio", "0.6667", 1),
    ("product", "dau_mau_ratio", "0.2500", 1),
    ("sales", "total_pipeline_value", "4000.0000", 3),
    ("sales", "revenue_closed_mtd", "500.0000", 3),
    ("sales", "pipeline_coverage_ratio", "1.3793", 2),
    ("sales", "open_opportunities", "1.0000", 3),
    ("sales", "deals_won_mtd", "0.6667", 3),
    ("sales", "win_rate", "0.5556", 3),
]


def test_domain_overview_averages_and_counts_every_tier_1_metric(published):
    rows = run_guide(published.reader, published.d, "02_domain_overview")
    # the guide's ORDER BY domain, avg_value DESC; ties (company: 12 and 12, 3 and 3) by name
    assert [(r[0], -r[2]) for r in rows] == sorted((r[0], -r[2]) for r in rows)
    rows.sort(key=lambda r: (r[0], -r[2], r[1]))
    assert [(dom, name, q4(avg), n) for dom, name, avg, n in rows] == [
        (dom, name, Decimal(avg), n) for dom, name, avg, n in OVERVIEW]
    exact = {(r[0], r[1]): r[2] for r in rows}
    assert exact[("customer_success", "current_mrr")] == Decimal("387.125")
    assert exact[("customer_success", "customer_health_score")] == Decimal("60")
    assert exact[("sales", "pipeline_coverage_ratio")] == Decimal("1.3793")
    # the registry's implemented numeric tier-1 metrics, all with a value on D in this fixture
    # but mrr_mom_growth_pct (placeholders and text metrics never reach the unified table)
    assert {(dom, name) for dom, name, _, _ in OVERVIEW} == {
        (d.name, m.name) for d in REGISTRY.values() for m in d.unified if m.tier == "tier_1"
    } - {("company", "mrr_mom_growth_pct")}
    # the same from the domain tables: exactly the tier-1 metrics with a value on D
    with_values = set()
    for d in REGISTRY.values():
        tier_1 = [m.name for m in d.unified if m.tier == "tier_1"]
        counts = published.conn.execute(
            f"select {', '.join(f'count({m})' for m in tier_1)} from entity.{d.table} "  # noqa: S608
            "where metric_date = %s", (published.d,)).fetchone()
        with_values |= {(d.name, m) for m, n in zip(tier_1, counts, strict=True) if n}
    assert {(r[0], r[1]) for r in rows} == with_values


# Product days in [D-30, D]: published D-31 (outside: CURRENT_DATE - 30 = D-30 is the first day
# in), D-30 and D.
#   D-30: DAU = active on D-31 {11} = 1; MAU = [D-60, D-30): 11 (D-31, D-45), 12 (D-35),
#     21 (D-50) = 3; 1/3 = 0.3333
#   D: 3, 12, 0.25 (above)
def test_time_series_sums_the_product_days_of_the_last_30(published):
    d = published.d
    rows = run_guide(published.reader, d, "03_time_series_analysis")
    assert rows == [(d - timedelta(days=30), 1, 3, Decimal("0.3333")), (d, 3, 12, Decimal("0.2500"))]
    assert published.conn.execute(
        "select daily_active_users, monthly_active_users, dau_mau_ratio from "
        "entity.metrics_product_analytics where metric_date = %s",
        (d - timedelta(days=31),)).fetchone() == (0, 3, Decimal("0.0000"))


# Health categories on D (>= 80 Healthy, >= 60 Stable, else At Risk; a NULL health is neither
# comparison, so the CASE's ELSE puts it in At Risk):
#   Healthy: Crane 85.00, Dyna 80.00 (the bound), Lumen 99.51 -> 3; MRR 300 + 250 + 2000 =
#     2550.00; MAU 0, 3, 0 -> 1
#   Stable: Acme 68.33, Bolt 79.17, Echo 60.00 (the bound) -> 3; MRR 1200 + 400 + 0 = 1600.00;
#     MAU 3, 3, 0 -> 2
#   At Risk: Fjord 59.99, Gale, Hale, Iris, Jade, Kilo (NULL) -> 6; MRR 150 + 100 + 100 + 50 +
#     75.50 + 20 = 495.50; MAU 0, 2, 0, 0, 0, 1 -> 0.5
def test_cross_domain_health_categories(published):
    rows = run_guide(published.reader, published.d, "04_cross_domain_analysis")
    assert {r[0]: r[1:] for r in rows} == {
        "Healthy": (3, Decimal("2550.00"), Decimal("1")),
        "Stable": (3, Decimal("1600.00"), Decimal("2")),
        "At Risk": (6, Decimal("495.50"), Decimal("0.5")),
    }
    assert len(rows) == 3
    # the company overview counts the guide's categories the same way (NULL health: at risk)
    assert published.reader.execute(
        "select healthy_customers, stable_customers, at_risk_customers, mrr_at_risk "
        "from metrics_company_overview where metric_date = current_date").fetchone() == (
        3, 3, 6, Decimal("495.50"))


def test_the_layers_own_connection_gives_the_same_rows(published):
    names = sorted(p.stem for p in GUIDE_QUERIES.glob("*.sql"))
    assert names == ["01_basic_query", "02_domain_overview", "03_time_series_analysis",
                     "04_cross_domain_analysis"]
    with pipeline.connect() as c:
        own = {n: run_guide(c, published.d, n) for n in names}
    assert own == {n: run_guide(published.reader, published.d, n) for n in names}


# ---------------------------------------------------------------------------- calculated fields

# MRR Growth on metrics_customer_success, D: (current - previous) / previous x 100.
#   Acme 1000 -> 1200: 20; Bolt 500 -> 400: -20; Dyna, Gale, Hale, Iris, Jade, Lumen flat: 0.
#   previous_month_mrr NULL, so growth NULL and no division error: Crane and Kilo (first
#   subscription after D - 1 month), Echo (none), Fjord (a 0.00 free plan a month ago: the
#   layer publishes NULL, not 0).
def test_mrr_growth_calculated_field(published):
    rows = published.reader.execute(
        "select customer_id, (current_mrr - previous_month_mrr) / previous_month_mrr * 100 "
        "from metrics_customer_success where metric_date = current_date order by customer_id"
    ).fetchall()
    assert dict(rows) == {1: 20, 2: -20, 3: None, 4: 0, 5: None, 6: None, 7: 0, 8: 0, 9: 0, 10: 0,
                          11: None, 12: 0}


# Health Trend on one customer over two published days: Crane's device read 70.00 on D-2 (its
# latest reading as of D-1) and 85.00 on D-1 (as of D) -> NULL on D-1 (no earlier row), +15 on D.
# The guide's window has no PARTITION BY: over several customers it would subtract another
# customer's score, so the dataset (or chart) must hold one customer.
def test_health_trend_calculated_field(published):
    d = published.d
    rows = published.reader.execute(
        "select metric_date, customer_health_score, "
        "customer_health_score - LAG(customer_health_score) OVER (ORDER BY metric_date) "
        "from metrics_customer_success where customer_id = 3 order by metric_date").fetchall()
    assert rows == [(d - timedelta(days=1), Decimal("70.00"), None), (d, Decimal("85.00"), Decimal("15.00"))]


# Pipeline Velocity on metrics_sales, D: pipeline_value / avg_sales_cycle_days.
#   Ana: 8000 / ((10 + 22 days) / 2 = 16.00) = 500; Ben won nothing: cycle NULL -> NULL;
#   Cleo: pipeline 0 / 2.00 days (one deal, D-3 12:00 -> D-1 12:00) = 0.
def test_pipeline_velocity_calculated_field(published):
    rows = published.reader.execute(
        "select rep_id, pipeline_value, total_pipeline_value, avg_sales_cycle_days, "
        "pipeline_value / avg_sales_cycle_days "
        "from metrics_sales where metric_date = current_date order by rep_id").fetchall()
    assert rows == [
        (1, Decimal("8000.00"), Decimal("8000.00"), Decimal("16.00"), Decimal("500")),
        (2, Decimal("4000.00"), Decimal("4000.00"), None, None),
        (3, Decimal("0"), Decimal("0"), Decimal("2.00"), Decimal("0")),
    ]


def test_pipeline_velocity_fails_on_a_zero_sales_cycle_unless_guarded(published):
    """A deal won the instant it was created gives avg_sales_cycle_days 0.00 (so does any mean
    below 0.005 days, about 7 minutes): the guide's expression then fails the whole query with
    'division by zero' in PostgreSQL; nullif(avg_sales_cycle_days, 0) turns the rep's value into
    NULL (the registry's formula for pipeline_value says so). Runs last: it republishes sales."""
    conn, reader, d = published.conn, published.reader, published.d
    sales = REGISTRY["sales"]
    conn.execute("insert into raw.opportunities (opportunity_id, rep_id, amount, stage, created_at, "
                 "closed_at) values (9, 2, 700.00, 'closed_won', pg_temp.at(-1, '09:00'), "
                 "pg_temp.at(-1, '09:00'))")
    try:
        pipeline.refresh_domain(conn, sales, d, "guide-zero-cycle")
        assert reader.execute("select avg_sales_cycle_days from metrics_sales "
                              "where metric_date = current_date and rep_id = 2").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.DivisionByZero):
            reader.execute("select rep_id, pipeline_value / avg_sales_cycle_days from metrics_sales "
                           "where metric_date = current_date").fetchall()
        rows = reader.execute(
            "select rep_id, pipeline_value / nullif(avg_sales_cycle_days, 0) from metrics_sales "
            "where metric_date = current_date order by rep_id").fetchall()
        assert rows == [(1, Decimal("500")), (2, None), (3, Decimal("0"))]
    finally:
        conn.execute("delete from raw.opportunities where opportunity_id = 9")
        pipeline.refresh_domain(conn, sales, d, "guide-restored")
        pipeline.build_unified(conn)
