"""entity.metrics_company_overview: every executive KPI computed by hand.

The overview reads the published domain tables (and raw.opportunities for company-wide win rate
and coverage), so the fixture is hand-built published rows. D = 2026-03-31, a month end: one
month earlier is 2026-02-28.

    customers on D (current_mrr, customer_health_score):
      1: 1000, 85     healthy          4:  200, 60     stable (>= 60)
      2:  500, 80     healthy (>= 80)  5:  100, NULL   at risk (the guide's ELSE)
      3:  300, 79.99  stable           6:   50, 59.99  at risk
    total_mrr 2150; avg health over the 5 scores = 364.98 / 5 = 72.996 -> 73.00;
    healthy 2, stable 2, at risk 2, mrr_at_risk 100 + 50 = 150.
    customers on 2026-02-28: 1000 + 500 + 500 = 2000 -> growth 100 x 150 / 2000 = 7.50 %.
    reps on D: pipeline 10000 + 5000 = 15000; revenue_closed_mtd 3000 + 0 = 3000.
    opportunities closed in [2025-12-31, 2026-03-31): won 4000 and 2000, lost 1 -> win rate
      2 / 3 = 0.6667, coverage 15000 / 6000 = 2.5000 (a win closed on D and a loss on 12-30 are
      outside).
    product on D: DAU 100, MAU 400, stickiness 0.2500; marketing on D: spend 5000, ROI 1.5000,
    MQLs 40, CAC 250.00.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from metrics_layer import pipeline, seed, validation
from metrics_layer.registry import load_registry

COMPANY = load_registry()["company"]
D = date(2026, 3, 31)
MONTH_AGO = date(2026, 2, 28)


@pytest.fixture
def published(conn):
    seed.apply_source_contract(conn)
    pipeline.ensure_schema(conn)
    cs = [(1, 1000, 85), (2, 500, 80), (3, 300, Decimal("79.99")), (4, 200, 60), (5, 100, None),
          (6, 50, Decimal("59.99"))]
    for cid, mrr, health in cs:
        conn.execute("insert into entity.metrics_customer_success (metric_date, customer_id, current_mrr, "
                     "customer_health_score) values (%s, %s, %s, %s)", (D, cid, mrr, health))
    for cid, mrr in ((1, 1000), (2, 500), (3, 500)):
        conn.execute("insert into entity.metrics_customer_success (metric_date, customer_id, current_mrr) "
                     "values (%s, %s, %s)", (MONTH_AGO, cid, mrr))
    for rep, pipe, mtd in ((1, 10000, 3000), (2, 5000, 0)):
        conn.execute("insert into entity.metrics_sales (metric_date, rep_id, total_pipeline_value, "
                     "revenue_closed_mtd) values (%s, %s, %s, %s)", (D, rep, pipe, mtd))
    conn.execute("insert into raw.sales_reps (rep_id, rep_name, team, hired_at) values "
                 "(1, 'Ana', 'smb', '2025-01-01'), (2, 'Ben', 'smb', '2025-01-01')")
    conn.execute(
        "insert into raw.opportunities (opportunity_id, rep_id, amount, stage, created_at, closed_at) values "
        "(1, 1, 4000, 'closed_won', '2026-01-01', '2026-01-15'), "
        "(2, 2, 2000, 'closed_won', '2025-12-01', '2025-12-31 00:00+00'), "   # first instant of the 90 days
        "(3, 1, 9000, 'closed_lost', '2026-01-01', '2026-03-30 23:59+00'), "
        "(4, 1, 7000, 'closed_won', '2026-03-01', '2026-03-31 00:00+00'), "   # on D: after the snapshot
        "(5, 2, 1000, 'closed_lost', '2025-12-01', '2025-12-30 23:59+00')")   # before the 90 days
    conn.execute("insert into entity.metrics_product_analytics (metric_date, product_scope, daily_active_users, "
                 "monthly_active_users, dau_mau_ratio) values (%s, 'all', 100, 400, 0.2500)", (D,))
    conn.execute("insert into entity.metrics_marketing (metric_date, marketing_scope, total_ad_spend_active, "
                 "overall_roi, total_mqls, customer_acquisition_cost) values (%s, 'all', 5000, 1.5, 40, 250)",
                 (D,))
    return conn


def _overview(conn, d: date = D) -> dict:
    with conn.cursor() as cur:
        cur.execute("select * from entity.metrics_company_overview where metric_date = %s", (d,))
        row = cur.fetchone()
        return dict(zip([c.name for c in cur.description], row, strict=True))


def test_every_kpi_matches_the_hand_computed_value(published):
    pipeline.refresh_domain(published, COMPANY, D, "overview")
    row = _overview(published)
    assert {m.name: row[m.name] for m in COMPANY.implemented} == {
        "total_mrr": Decimal("2150"), "mrr_mom_growth_pct": Decimal("7.50"), "active_customers": 6,
        "avg_health_score": Decimal("73.00"), "healthy_customers": 2, "stable_customers": 2,
        "at_risk_customers": 2, "mrr_at_risk": Decimal("150"),
        "total_pipeline_value": Decimal("15000"), "pipeline_coverage_ratio": Decimal("2.5000"),
        "win_rate": Decimal("0.6667"), "revenue_closed_mtd": Decimal("3000"),
        "daily_active_users": 100, "monthly_active_users": 400, "dau_mau_ratio": Decimal("0.2500"),
        "total_ad_spend": Decimal("5000"), "overall_roi": Decimal("1.5000"), "total_mqls": 40,
        "customer_acquisition_cost": Decimal("250.00"),
    }
    assert row["company_scope"] == "all"


def test_a_domain_not_yet_published_leaves_its_kpis_null_and_the_checks_pass(published):
    published.execute("delete from entity.metrics_marketing")
    published.execute("delete from entity.metrics_customer_success where metric_date = %s", (MONTH_AGO,))
    pipeline.stage(published, COMPANY, D, run_id="partial")
    summary = validation.validate_day(COMPANY, D, "partial")
    assert summary.success, summary.describe()
    pipeline.publish(published, COMPANY, D, "partial")
    row = _overview(published)
    assert [row[k] for k in ("total_ad_spend", "overall_roi", "total_mqls", "customer_acquisition_cost",
                             "mrr_mom_growth_pct")] == [None] * 5
    assert row["total_mrr"] == 2150


def test_an_inconsistent_overview_is_stopped_by_its_tier_1_suite(published):
    pipeline.stage(published, COMPANY, D, run_id="bad")
    published.execute("update metrics_staging.metrics_company_overview set healthy_customers = 3, "
                      "mrr_at_risk = 9999")
    summary = validation.validate_day(COMPANY, D, "bad")
    assert not summary.success
    described = summary.describe()
    assert "every active customer is healthy, stable or at risk" in described
    assert "the MRR at risk is part of the total MRR" in described


def test_the_fan_in_builds_the_overview_after_the_domains_and_unifies_it(published):
    published.execute("insert into metrics_ops.publish_log (target, metric_date, published_at, row_count, "
                      "version) values ('metrics_customer_success', %s, now(), 6, "
                      "nextval('metrics_ops.publish_version'))", (D,))
    versions = pipeline.derived_versions(published, COMPANY)
    assert list(versions) == [D]
    pipeline.refresh_domain(published, COMPANY, D, "fan-in")
    pipeline.record_derived(published, COMPANY, versions, "fan-in")
    assert pipeline.derived_versions(published, COMPANY) == {}  # nothing new since
    pipeline.build_unified(published, "fan-in")
    got = dict(published.execute(
        "select metric_name, metric_value from entity.metrics_unified_domains where domain = 'company' "
        "and metric_date = %s", (D,)).fetchall())
    assert got["total_mrr"] == 2150 and got["win_rate"] == Decimal("0.6667")
    assert published.execute("select count(*) from entity.metrics_api where domain = 'company'"
                             ).fetchone()[0] == len(got)
