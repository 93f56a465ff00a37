"""Every metric states its rounding in the registry (`rounding`: decimal places; 0 for counts;
none for text), and the published values keep to it: on a seeded warehouse, every implemented
numeric metric of every domain has no more decimals than declared."""

from __future__ import annotations

from datetime import date

import pytest

from metrics_layer import pipeline, seed
from metrics_layer.registry import NUMERIC_TYPES, load_registry

DOMAINS = list(load_registry().values())
TODAY = date.today()


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_every_numeric_metric_declares_its_rounding(domain):
    for m in domain.metrics:
        if m.type in ("integer", "bigint"):
            assert m.rounding == 0, f"{domain.name}.{m.name}: a count has rounding 0"
        elif m.type in NUMERIC_TYPES:
            assert isinstance(m.rounding, int) and m.rounding >= 0, f"{domain.name}.{m.name}: no rounding"
        else:
            assert m.rounding is None, f"{domain.name}.{m.name}: a {m.type} metric has no rounding"


@pytest.fixture(scope="module")
def seeded(pg_server):
    from conftest import LAYER_SCHEMAS, _connect

    conn = _connect(pg_server)
    for schema in LAYER_SCHEMAS:
        conn.execute(f"drop schema if exists {schema} cascade")
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    for domain in DOMAINS:
        pipeline.refresh_domain(conn, domain, TODAY, run_id="rounding")
    yield conn
    conn.close()


@pytest.mark.parametrize("domain", DOMAINS, ids=lambda d: d.name)
def test_published_values_have_at_most_the_declared_decimals(seeded, domain):
    metrics = [m for m in domain.unified if m.rounding is not None]
    assert metrics
    checks = ", ".join(
        f"count(*) filter (where {m.name}::numeric <> round({m.name}::numeric, {m.rounding})), "
        f"count({m.name})" for m in metrics)
    row = seeded.execute(f"select count(*), {checks} from entity.{domain.table} "  # noqa: S608
                         "where metric_date = %s", (TODAY,)).fetchone()
    assert row[0] > 0
    too_precise = {m.name: row[1 + 2 * i] for i, m in enumerate(metrics) if row[1 + 2 * i]}
    assert too_precise == {}, f"values with more decimals than the registry's rounding: {too_precise}"
    # the check saw values: most metrics are non-NULL on a seeded day
    assert sum(row[2 + 2 * i] > 0 for i in range(len(metrics))) >= len(metrics) // 2


def test_a_malformed_rounding_fails_loudly(tmp_path):
    from metrics_layer.paths import REGISTRY_DIR
    from metrics_layer.registry import RegistryError, load_domain

    text = (REGISTRY_DIR / "customer_success.yaml").read_text()
    bad = tmp_path / "cs.yaml"
    first = "    rounding: 2\n"
    for wrong, message in (("    rounding: two\n", "rounding must be a number of decimal places"),
                           ("    rounding: -1\n", "rounding must be a number of decimal places"),
                           ("    rounding: true\n", "rounding must be a number of decimal places")):
        bad.write_text(text.replace(first, wrong, 1))
        with pytest.raises(RegistryError, match=f"customer_health_score: {message}"):
            load_domain(bad)
    # a count cannot have decimals
    bad.write_text(text.replace("    type: integer\n    rounding: 0\n", "    type: integer\n    rounding: 2\n", 1))
    with pytest.raises(RegistryError, match="monthly_active_users: type integer holds whole numbers: rounding must be 0"):
        load_domain(bad)
