"""Checks: severities from the registry, the source contract enforced on the rows a run reads,
robust seasonal anomaly checks, and every result stored in metrics_ops.check_results.

Source checks are exercised the way the issue found them: on a warehouse whose tables lost the
contract's constraints, each of four kinds of bad row used to publish a wrong number silently."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import date, timedelta

import pendulum
import pytest

from helpers import table_dump
from metrics_layer import checks, pipeline, seed, validation
from metrics_layer.paths import EXPECTATIONS_DIR
from metrics_layer.registry import load_registry

TODAY = date.today()
YESTERDAY = TODAY - timedelta(days=1)
REGISTRY = load_registry()


def run(dagbag, dag_id: str, d: date = TODAY):
    return dagbag.get_dag(dag_id).test(logical_date=pendulum.datetime(d.year, d.month, d.day, tz="UTC"))


def states(dr) -> dict:
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def results(conn, dag_id: str, run_id: str, **where) -> list[dict]:
    sql = "select * from metrics_ops.check_results where dag_id = %(dag)s and run_id = %(run)s"
    for k in where:
        sql += f" and {k} = %({k})s"
    cur = conn.cursor()
    cur.execute(sql + " order by result_id", {"dag": dag_id, "run": run_id, **where})
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


@pytest.fixture
def seeded(conn):
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    return conn


def _published(conn, table: str, d: date) -> list[tuple]:
    return [r for r in table_dump(conn, f"entity.{table}") if r[0] == d]


# ------------------------------------------------------------------ registry and suites

@pytest.mark.parametrize("domain", list(REGISTRY.values()), ids=lambda d: d.name)
def test_every_tier_1_metric_is_tested_by_an_error_check(domain):
    suite = json.loads((EXPECTATIONS_DIR / domain.expectation_suite).read_text())
    assert validation.uncovered_tier_1(domain, suite) == []
    names = [validation.check_name(e) for e in suite["expectations"]]
    assert len(names) == len(set(names)), "check names must be unique within a suite"


def test_a_tier_1_metric_only_named_or_only_not_null_counts_as_uncovered():
    cs = REGISTRY["customer_success"]
    suite = json.loads((EXPECTATIONS_DIR / cs.expectation_suite).read_text())
    mutated = copy.deepcopy(suite)
    # drop the range check of current_mrr: its not-null check remains, which tests no value
    mutated["expectations"] = [e for e in suite["expectations"]
                               if not (e["type"] == "expect_column_values_to_be_between"
                                       and e["kwargs"].get("column") == "current_mrr")]
    # and mention it in the select list (not the WHERE clause) of an SQL check
    mutated["expectations"].append({"type": "unexpected_rows_expectation", "meta": {"check": "x"},
                                    "kwargs": {"unexpected_rows_query":
                                               "select current_mrr from {batch} where false"}})
    assert validation.uncovered_tier_1(cs, mutated) == ["current_mrr"]
    # a check downgraded to warn no longer covers its metric
    warned = copy.deepcopy(suite)
    for e in warned["expectations"]:
        if e["kwargs"].get("column") == "current_mrr":
            e.setdefault("meta", {})["severity"] = "warn"
    assert validation.uncovered_tier_1(cs, warned) == ["current_mrr"]


def test_severity_overrides_name_real_checks_and_defaults_follow_tiers():
    all_checks = {name for spec in checks.source_specs().values()
                  for name in [f"{spec.table.split('.')[1]}_key_unique",
                               f"{spec.table.split('.')[1]}_fresh", *(r.name for r in spec.rules)]}
    for domain in REGISTRY.values():
        suite = json.loads((EXPECTATIONS_DIR / domain.expectation_suite).read_text())
        names = {validation.check_name(e) for e in suite["expectations"]}
        names |= {f"{a.metric}_anomaly" for a in domain.anomalies}
        for check in domain.severity_overrides:
            assert check in names | all_checks, f"{domain.name}: checks.severity names no check {check!r}"
    mkt = REGISTRY["marketing"]
    suite = {validation.check_name(e): e for e in
             json.loads((EXPECTATIONS_DIR / mkt.expectation_suite).read_text())["expectations"]}
    # tier-1 integrity: error; a tier-2 metric's range: warn; the registry's override: warn
    assert validation.severity(mkt, suite["total_ad_spend_active_in_range"]) == "error"
    assert validation.severity(mkt, suite["bounce_rate_in_range"]) == "warn"
    assert validation.severity(mkt, suite["other_platforms_spend_is_zero"]) == "warn"
    assert validation.severity(mkt, suite["spend_total_is_sum_of_platforms"]) == "error"


# ------------------------------------------------------------------ source checks

def test_a_ticket_resolved_before_it_was_created_blocks_the_day_naming_it(dagbag, seeded):
    assert run(dagbag, "metrics_customer_success").state == "success"
    good = _published(seeded, "metrics_customer_success", TODAY)
    seeded.execute("alter table raw.support_tickets drop constraint if exists support_tickets_check")
    customer = seeded.execute("select min(customer_id) from raw.customers").fetchone()[0]
    # created yesterday 12:00, "resolved" 72 hours earlier: -72 h of resolution time
    seeded.execute("insert into raw.support_tickets values (990001, %s, %s, %s, 'high')",
                   (customer, f"{YESTERDAY} 12:00+00", f"{YESTERDAY - timedelta(days=3)} 12:00+00"))
    dr = run(dagbag, "metrics_customer_success")
    assert dr.state == "failed"
    assert states(dr)["check_sources"] == "failed" and states(dr)["build_and_validate"] == "upstream_failed"
    bad = results(seeded, "metrics_customer_success", dr.run_id, success=False)
    assert [(r["check_name"], r["severity"], r["entity"], r["observed"]) for r in bad] == [
        ("support_tickets_resolved_after_created", "error", f"ticket 990001 of customer {customer}",
         "1 bad row(s)")]
    assert _published(seeded, "metrics_customer_success", TODAY) == good
    assert seeded.execute("select min(avg_ticket_resolution_hours) from entity.metrics_customer_success"
                          ).fetchone()[0] >= 0


def test_a_negative_won_deal_blocks_sales(dagbag, seeded):
    seeded.execute("alter table raw.opportunities drop constraint if exists opportunities_amount_check")
    rep = seeded.execute("select min(rep_id) from raw.sales_reps where left_at is null").fetchone()[0]
    seeded.execute("insert into raw.opportunities values (990002, %s, null, null, -500, 'closed_won', "
                   "%s, %s)", (rep, f"{YESTERDAY - timedelta(days=5)} 09:00+00", f"{YESTERDAY} 09:00+00"))
    dr = run(dagbag, "metrics_sales")
    assert dr.state == "failed" and states(dr)["check_sources"] == "failed"
    bad = results(seeded, "metrics_sales", dr.run_id, success=False)
    assert [(r["check_name"], r["entity"]) for r in bad] == [
        ("opportunities_amount_non_negative", f"opportunity 990002 of rep {rep}")]
    assert _published(seeded, "metrics_sales", TODAY) == []


def test_an_exact_duplicate_row_blocks_the_domains_reading_it(dagbag, seeded):
    for table in ("product_sessions", "sales_activities"):
        seeded.execute(f"alter table raw.{table} drop constraint {table}_pkey")
    sid = seeded.execute("select max(session_id) from raw.product_sessions where started_at >= %s "
                         "and started_at < %s", (YESTERDAY, TODAY)).fetchone()[0]
    seeded.execute("insert into raw.product_sessions select * from raw.product_sessions where session_id = %s", (sid,))
    aid = seeded.execute("select max(activity_id) from raw.sales_activities where occurred_at >= %s "
                         "and occurred_at < %s and activity_type = 'call'", (YESTERDAY, TODAY)).fetchone()[0]
    seeded.execute("insert into raw.sales_activities select * from raw.sales_activities where activity_id = %s", (aid,))
    user = seeded.execute("select user_id from raw.product_sessions where session_id = %s", (sid,)).fetchone()[0]
    rep = seeded.execute("select rep_id from raw.sales_activities where activity_id = %s", (aid,)).fetchone()[0]
    for dag_id, check, entity in (
            ("metrics_product_analytics", "product_sessions_key_unique", f"session {sid} of user {user}"),
            ("metrics_customer_success", "product_sessions_key_unique", f"session {sid} of user {user}"),
            ("metrics_sales", "sales_activities_key_unique", f"activity {aid} of rep {rep}")):
        dr = run(dagbag, dag_id)
        assert dr.state == "failed" and states(dr)["check_sources"] == "failed", dag_id
        bad = results(seeded, dag_id, dr.run_id, success=False)
        assert [(r["check_name"], r["entity"], r["observed"]) for r in bad] == [
            (check, entity, "1 duplicated key(s), 1 extra row(s)")], dag_id
        assert _published(seeded, dag_id, TODAY) == []


def test_negative_ad_spend_blocks_marketing(dagbag, seeded):
    seeded.execute("alter table raw.ad_spend_daily drop constraint if exists ad_spend_daily_spend_check")
    campaign = seeded.execute("select min(campaign_id) from raw.ad_campaigns").fetchone()[0]
    seeded.execute("delete from raw.ad_spend_daily where campaign_id = %s and spend_date = %s",
                   (campaign, YESTERDAY))
    seeded.execute("insert into raw.ad_spend_daily select %s, %s, platform, -1000, 0, 0 from "
                   "raw.ad_campaigns where campaign_id = %s", (YESTERDAY, campaign, campaign))
    dr = run(dagbag, "metrics_marketing")
    assert dr.state == "failed" and states(dr)["check_sources"] == "failed"
    bad = results(seeded, "metrics_marketing", dr.run_id, success=False)
    assert [(r["check_name"], r["entity"]) for r in bad] == [
        ("ad_spend_non_negative", f"campaign {campaign} on {YESTERDAY}")]
    assert _published(seeded, "metrics_marketing", TODAY) == []


def test_on_a_warehouse_keeping_the_contract_key_checks_cost_nothing_and_all_results_are_stored(
        dagbag, seeded):
    dr = run(dagbag, "metrics_customer_success")
    assert dr.state == "success"
    stored = results(seeded, "metrics_customer_success", dr.run_id)
    kinds = {}
    for r in stored:
        kinds.setdefault(r["check_kind"], []).append(r)
    suite = json.loads((EXPECTATIONS_DIR / "metrics_customer_success.json").read_text())
    # every expectation of the suite, every anomaly rule, every source check: one row each
    assert len(kinds["expectation"]) == len(suite["expectations"])
    assert {r["check_name"] for r in kinds["anomaly"]} == {
        "current_mrr_anomaly", "monthly_active_users_anomaly", "customer_health_score_anomaly"}
    keys = {r["check_name"]: r for r in kinds["source"] if r["check_name"].endswith("_key_unique")}
    assert len(keys) == 9 and all(r["expected"] == "enforced by a unique index" for r in keys.values())
    assert all(r["metric_date"] == TODAY and r["success"] for r in kinds["expectation"])
    # the anomaly checks have too little history (5 weeks of data, 4 same-weekday values needed
    # only from the 5th week): no verdict is a pass, and says so
    assert all(r["success"] for r in kinds["anomaly"])
    # readers see the history too
    n = seeded.execute("select count(*) from entity.metrics_check_results where run_id = %s",
                       (dr.run_id,)).fetchone()[0]
    assert n == len(stored)


def test_a_warn_check_alerts_but_publishes(dagbag, seeded):
    """An ad platform nobody registered: its spend is counted in the totals and shown in
    other_platforms_spend; the registry makes that check a warning, so the day publishes."""
    campaign = seeded.execute("select min(campaign_id) from raw.ad_campaigns").fetchone()[0]
    seeded.execute("update raw.ad_campaigns set platform = 'tiktok_ads' where campaign_id = %s", (campaign,))
    seeded.execute("update raw.ad_spend_daily set platform = 'tiktok_ads' where campaign_id = %s", (campaign,))
    tiktok = seeded.execute("select sum(spend) from raw.ad_spend_daily where campaign_id = %s and "
                            "spend_date >= %s and spend_date < %s",
                            (campaign, TODAY - timedelta(days=30), TODAY)).fetchone()[0]
    assert tiktok > 0
    dr = run(dagbag, "metrics_marketing")
    assert dr.state == "success"
    bad = results(seeded, "metrics_marketing", dr.run_id, success=False)
    assert [(r["check_name"], r["severity"]) for r in bad] == [("other_platforms_spend_is_zero", "warn")]
    assert seeded.execute("select other_platforms_spend from entity.metrics_marketing where metric_date = %s",
                          (TODAY,)).fetchone()[0] == tiktok


# ------------------------------------------------------------------ anomaly checks

PRODUCT = REGISTRY["product"]
RUN = "anomaly-test"
SATURDAY = TODAY - timedelta(days=(TODAY.weekday() - 5) % 7)  # the latest Saturday, maybe today
TUESDAY = SATURDAY - timedelta(days=4)


def _series(conn, day: date, values: dict[date, int], today: int, domain=PRODUCT) -> checks.CheckResult:
    """Publish daily_active_users for the given dates, stage `today` for `day`, run the
    product domain's anomaly checks for `day` and return the DAU one."""
    pipeline.ensure_schema(conn)
    conn.execute("delete from entity.metrics_product_analytics")
    conn.execute("delete from metrics_staging.metrics_product_analytics")
    for d, v in values.items():
        conn.execute("insert into entity.metrics_product_analytics (metric_date, product_scope, "
                     "daily_active_users, weekly_active_users, monthly_active_users) "
                     "values (%s, 'all', %s, 1000, 2000)", (d, v))
    conn.execute("insert into metrics_staging.metrics_product_analytics (stage_id, metric_date, "
                 "product_scope, daily_active_users, weekly_active_users, monthly_active_users) "
                 "values (%s, %s, 'all', %s, 1000, 2000)", (pipeline.stage_key(RUN), day, today))
    found = checks.anomaly_checks(conn, domain, day, pipeline.stage_key(RUN))
    return {r.check_name: r for r in found}["daily_active_users_anomaly"]


def _weekly_pattern(day: date, weekday_value: int, weekend_value: int, days: int = 63) -> dict[date, int]:
    """The `days` days before `day`: lower on Saturdays and Sundays, with a little noise."""
    out = {}
    for i in range(1, days + 1):
        d = day - timedelta(days=i)
        out[d] = (weekend_value if d.weekday() >= 5 else weekday_value) + (i * 7) % 11 - 5
    return out


def test_a_normal_weekend_dip_is_not_an_anomaly(conn):
    history = _weekly_pattern(SATURDAY, 1000, 600)
    dau = _series(conn, SATURDAY, history, 603)
    assert dau.success, dau.describe()
    assert 595 <= dau.details["median"] <= 605
    # whereas the median of the last 14 days (the usual baseline) is a weekday's level: a naive
    # check would see a 40% drop every weekend
    last_14 = sorted(v for d, v in history.items() if d >= SATURDAY - timedelta(days=14))
    assert last_14[7] >= 995


def test_a_weekend_level_on_a_weekday_is_an_anomaly(conn):
    dau = _series(conn, TUESDAY, _weekly_pattern(TUESDAY, 1000, 600), 600)
    assert not dau.success
    assert dau.observed.startswith("sum 600.00 (-40% vs median)")


def test_a_flat_series_never_alerts(conn):
    history = {TUESDAY - timedelta(days=i): 500 for i in range(1, 64)}
    # MAD 0: only the minimum change guards; +1 user is far below min_rel (20% = 100 users)
    dau = _series(conn, TUESDAY, history, 501)
    assert dau.success and dau.details["mad"] == 0 and dau.details["threshold"] == 100.0
    dau = _series(conn, TUESDAY, history, 500)
    assert dau.success


def test_a_real_40_percent_drop_alerts_with_the_figures(conn):
    dau = _series(conn, SATURDAY, _weekly_pattern(SATURDAY, 1000, 600), 360)
    assert not dau.success and dau.severity == "warn"
    median = dau.details["median"]
    assert 595 <= median <= 605
    # threshold: max(4 x 1.4826 x MAD, 5, 20% of the median) = 20% of the median here
    assert dau.details["threshold"] == pytest.approx(0.2 * median)
    assert dau.observed.startswith("sum 360.00 (-40% vs median)")
    assert "median of 8 Saturdays" in dau.expected
    assert len(dau.details["history"]) == 8


def test_each_rule_reads_its_own_weeks(conn):
    """The rules of a domain are evaluated together (one pass over today's rows, one over the
    history dates of every rule), yet each rule's median is over its own weeks only."""
    rules = {r.metric: r for r in PRODUCT.anomalies}
    domain = dataclasses.replace(PRODUCT, anomalies=(
        rules["daily_active_users"],
        dataclasses.replace(rules["monthly_active_users"], weeks=2, min_history=2),
    ))
    history = {TUESDAY - timedelta(weeks=w): 1000 + 10 * w for w in range(1, 9)}
    _series(conn, TUESDAY, history, 1000, domain=domain)
    found = {r.check_name: r for r in checks.anomaly_checks(conn, domain, TUESDAY, pipeline.stage_key(RUN))}
    assert sorted(found) == ["daily_active_users_anomaly", "monthly_active_users_anomaly"]
    dau, mau = found["daily_active_users_anomaly"], found["monthly_active_users_anomaly"]
    assert sorted(dau.details["history"]) == sorted(str(d) for d in history)
    assert dau.details["median"] == 1045.0  # 1040 and 1050, the middle two of 1010..1080
    assert sorted(mau.details["history"]) == [str(TUESDAY - timedelta(weeks=2)), str(TUESDAY - timedelta(weeks=1))]
    assert mau.details["median"] == 2000.0 and mau.success
    assert "median of 2 Tuesdays" in mau.expected


def test_exactly_the_minimum_change_is_not_beyond_it(conn):
    history = {TUESDAY - timedelta(weeks=w): 1000 for w in range(1, 9)}
    assert _series(conn, TUESDAY, history, 1200).success  # +20%: not beyond 20%
    assert not _series(conn, TUESDAY, history, 1201).success


def test_no_verdict_without_enough_history(conn):
    three_weeks = {TUESDAY - timedelta(weeks=w): 1000 for w in (1, 2, 3)}
    dau = _series(conn, TUESDAY, three_weeks, 100)
    assert dau.success and dau.details["verdict"] == "insufficient history"
    assert "3 of the last 8 Tuesdays published, 4 needed" in dau.expected


def test_excluded_dates_are_neither_history_nor_judged(conn):
    from dataclasses import replace

    incident = TUESDAY - timedelta(weeks=1)
    history = {TUESDAY - timedelta(weeks=w): 1000 for w in range(1, 9)} | {incident: 100}
    product = replace(PRODUCT, anomaly_exclude_dates=(incident,))
    dau = _series(conn, TUESDAY, history, 1000, domain=product)
    assert dau.success and str(incident) not in dau.details["history"]
    assert len(dau.details["history"]) == 7
    # the same drop on the incident day itself is not judged
    judged = _series(conn, incident, {incident - timedelta(weeks=w): 1000 for w in range(1, 9)}, 100,
                     domain=product)
    assert judged.success and judged.observed == "not judged: an excluded date"
    assert not _series(conn, incident, {incident - timedelta(weeks=w): 1000 for w in range(1, 9)}, 100).success


# ------------------------------------------------------------------ Data Docs

def test_make_docs_renders_the_suites_on_the_published_days(dagbag, seeded, tmp_path):
    from metrics_layer import datadocs

    assert run(dagbag, "metrics_customer_success").state == "success"
    index = datadocs.build(tmp_path / "site", days=3)
    assert index == tmp_path / "site" / "index.html"
    html = index.read_text()
    assert "metrics_customer_success.tier_1" in html
    pages = list((tmp_path / "site" / "validations").rglob("*.html"))
    # one page per published date of the domains that published (customer success only here)
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "current_mrr" in page and "metrics_sales" not in html
