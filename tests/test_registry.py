"""The registry is the single truth: tables, build queries and suites must agree with it."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from metrics_layer import pipeline, seed
from metrics_layer.paths import EXPECTATIONS_DIR, REGISTRY_DIR
from metrics_layer.registry import RegistryError, load_domain, load_registry

DOMAINS = list(load_registry().values())


def test_customer_success_lists_every_metric_the_guide_names():
    cs = load_registry()["customer_success"]
    assert {m.name for m in cs.implemented} == {
        "customer_health_score", "churn_risk_score", "composite_success_score",
        "monthly_active_users", "user_activation_rate", "avg_engagement_score",
        "features_adopted", "core_feature_adoption_rate", "support_tickets_30d",
        "ticket_resolution_rate", "avg_ticket_resolution_hours", "active_device_count",
        "avg_device_health_score", "volume_processed_30d", "current_mrr", "previous_month_mrr"}
    assert {m.name: m.requires for m in cs.placeholders} == {
        "nps_score": "Survey integration", "csat_score": "Survey integration",
        "time_to_value_days": "Milestone tracking", "expansion_potential_score": "Predictive model"}


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_table_columns_and_registry_agree(conn, domain):
    seed.apply_source_contract(conn)
    pipeline.ensure_schema(conn)
    for schema in ("entity", "metrics_staging"):
        cols = conn.execute(
            "select column_name from information_schema.columns where table_schema = %s "
            "and table_name = %s order by ordinal_position", (schema, domain.table)).fetchall()
        table_cols = [c[0] for c in cols]
        if schema == "metrics_staging":  # a slice per run: the stage id and when it was staged
            assert table_cols[:2] == ["stage_id", "staged_at"]
            table_cols = table_cols[2:]
        metric_cols = [c for c in table_cols if c not in domain.key_columns + domain.descriptive_columns]
        assert metric_cols == [m.name for m in domain.metrics], f"{schema}.{domain.table}"


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_build_query_returns_exactly_the_registry_columns(conn, domain):
    seed.apply_source_contract(conn)
    pipeline.ensure_schema(conn)
    with conn.cursor() as cur:
        cur.execute(f"select * from ({pipeline.build_select(domain)}) q limit 0",
                    {"metric_date": "2026-01-01"})
        assert tuple(c.name for c in cur.description) == domain.built_columns


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_tier_1_suite_covers_every_implemented_tier_1_metric(domain):
    suite = json.loads((EXPECTATIONS_DIR / domain.expectation_suite).read_text())
    columns = set()
    for e in suite["expectations"]:
        kw = e["kwargs"]
        columns |= {kw["column"]} if "column" in kw else set(kw.get("column_list", []))
        columns |= {m.name for m in domain.metrics if m.name in kw.get("unexpected_rows_query", "")}
    tier1 = {m.name for m in domain.implemented if m.tier == "tier_1"}
    assert tier1, f"{domain.name} has no tier-1 metric"
    assert tier1 <= columns, f"not covered: {sorted(tier1 - columns)}"
    assert columns <= set(domain.table_columns), f"unknown columns: {sorted(columns - set(domain.table_columns))}"


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_sql_checks_alias_the_batch_subquery_where_gx_does_not(domain):
    # GX substitutes {batch} with "(SELECT ... WHERE <day>)" and aliases it itself, except in a
    # query with a JOIN, where the author must. PostgreSQL before 16 rejects an unaliased
    # subquery in FROM (found on 15), so a JOIN query must write "{batch} as <alias>" and any
    # other query must not (it would get two aliases).
    suite = json.loads((EXPECTATIONS_DIR / domain.expectation_suite).read_text())
    for e in suite["expectations"]:
        query = e["kwargs"].get("unexpected_rows_query", "")
        aliased = len(re.findall(r"\{batch\}\s+as\s+\w+", query, re.I))
        expected = query.count("{batch}") if re.search(r"\bjoin\b", query, re.I) else 0
        assert aliased == expected, query


def test_a_malformed_registry_fails_loudly(tmp_path):
    src = REGISTRY_DIR / "customer_success.yaml"
    bad = tmp_path / "cs.yaml"
    shutil.copy(src, bad)
    text = src.read_text()
    bad.write_text(text.replace("    tier: tier_1\n", "    tier: tier_one\n", 1))
    with pytest.raises(RegistryError, match=r"cs.yaml: metrics\[0\] customer_health_score: tier must be"):
        load_domain(bad)
    bad.write_text(text.replace("    requires: Survey integration\n", "", 1))
    with pytest.raises(RegistryError, match="nps_score: a placeholder must say what it requires"):
        load_domain(bad)
    bad.write_text(text.replace("- name: churn_risk_score", "- name: Churn-Risk"))
    with pytest.raises(RegistryError, match="is not a lower-case SQL identifier"):
        load_domain(bad)
