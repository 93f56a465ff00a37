"""The catalog is generated from the registry, in the repo and in the warehouse."""

from __future__ import annotations

from metrics_layer import catalog, pipeline
from metrics_layer.registry import load_registry


def test_docs_metrics_md_is_up_to_date():
    assert catalog.CATALOG_MD.read_text() == catalog.render_markdown(), \
        "docs/metrics.md is stale: run `make catalog`"


def test_catalog_lists_tier_1_first_and_placeholders_with_requirements():
    text = catalog.render_markdown()
    cs = text[text.index("## customer_success"):]
    cs = cs[:cs.index("\n## ")] if "\n## " in cs else cs
    assert cs.index("### Tier 1") < cs.index("### Tier 2") < cs.index("### Not yet implemented")
    assert "| `customer_health_score` | Overall health of the account" in cs
    assert "| `nps_score` | Survey integration | tier_2 |" in cs


def test_warehouse_catalog_table_mirrors_the_registry(conn):
    pipeline.ensure_schema(conn)
    pipeline.ensure_schema(conn)  # idempotent: replaced, not appended
    total = sum(len(d.metrics) for d in load_registry().values())
    assert conn.execute("select count(*) from entity.metrics_catalog").fetchone()[0] == total
    row = conn.execute(
        "select table_name, importance_tier, unit, status, requires, owner from entity.metrics_catalog "
        "where domain = 'customer_success' and metric_name = 'nps_score'").fetchone()
    assert row == ("metrics_customer_success", "tier_2", "score", "placeholder", "Survey integration",
                   "cs-analytics")
