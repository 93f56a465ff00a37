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


def test_catalog_shows_each_metrics_rounding():
    text = catalog.render_markdown()
    assert "| metric | description | formula | unit | window | rounding | good when |" in text
    cs = text[text.index("## customer_success"):]
    assert "| `customer_health_score` |" in cs and "| 30d (engagement 7d) | 2 decimals | higher |" in cs
    assert "| `monthly_active_users` |" in cs and "| 30d | integer | higher |" in cs
    assert "| `user_activation_rate` |" in cs and "| as of D | 4 decimals | higher |" in cs
    mk = text[text.index("## marketing"):]
    assert "| channel | 30d | n/a (text) | neutral |" in mk


def test_warehouse_catalog_gains_the_rounding_column_on_an_existing_warehouse(conn):
    # a warehouse migrated before the column existed: `create table if not exists` alone would
    # keep the old table; the migration adds the column and fills it
    pipeline.ensure_schema(conn)
    conn.execute("alter table entity.metrics_catalog drop column rounding")
    conn.execute("update metrics_ops.schema_version set schema_hash = 'before-rounding'")
    assert pipeline.ensure_schema(conn)
    got = dict(conn.execute(
        "select metric_name, rounding from entity.metrics_catalog where domain = 'customer_success' "
        "and metric_name in ('customer_health_score', 'user_activation_rate', 'monthly_active_users')"
    ).fetchall())
    assert got == {"customer_health_score": 2, "user_activation_rate": 4, "monthly_active_users": 0}
    expected = {(d.name, m.name): m.rounding for d in load_registry().values() for m in d.metrics}
    rows = conn.execute("select domain, metric_name, rounding from entity.metrics_catalog").fetchall()
    assert {(d, n): r for d, n, r in rows} == expected
