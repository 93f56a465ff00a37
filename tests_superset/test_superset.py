"""The bundle in a fresh Superset 6.1 on a real warehouse: imported, queried through Superset's own
chart-data API, and rendered in headless Chromium (screenshots land in docs/img/ for the README).
Fixtures in conftest.py; the test order is the order of a first visit (warm cache, then look)."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import ROOT, timed
from metrics_layer import superset_bundle, superset_local
from metrics_layer.registry import load_registry

IMG_DIR = ROOT / "docs" / "img"
# metrics the registry calls placeholders (published as NULL): a chart series of them is empty
PLACEHOLDERS = {m.name for d in load_registry().values() for m in d.placeholders}
DASHBOARDS = {"executive": "Executive", "customer-success": "Customer Success", "sales": "Sales",
              "product": "Product"}


def _get(api, superset, path, **params):
    r = api.get(f"{superset.url}{path}", params=params, timeout=120)
    assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:500]}"
    return r.json()


def _list(api, superset, kind):
    return _get(api, superset, f"/api/v1/{kind}/", q="(page_size:100)")["result"]


@pytest.fixture(scope="module")
def built():
    datasets = superset_bundle.build_datasets()
    return datasets, superset_bundle.build_dashboards(datasets)


@pytest.fixture(scope="module")
def charts(api, superset):
    """Every chart in Superset: id -> its detail (params and saved query context parsed)."""
    out = {}
    for c in _list(api, superset, "chart"):
        detail = _get(api, superset, f"/api/v1/chart/{c['id']}")["result"]
        detail["params"] = json.loads(detail["params"])
        detail["query_context"] = json.loads(detail["query_context"])
        out[c["id"]] = detail
    return out


@pytest.fixture(scope="module")
def browser(superset, charts):
    """The four dashboards in headless Chromium, after the fixture's cache warm-up."""
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    n_charts = {}
    for d in _list(superset.session(), superset, "dashboard"):
        n_charts[d["slug"]] = sum(1 for c in charts.values()
                                  if d["id"] in [x["id"] for x in c.get("dashboards", [])])
    targets = [f"{slug}={n_charts[slug]}" for slug in DASHBOARDS]
    out = subprocess.run(
        [superset_local.venv_bin("python"), str(ROOT / "tests_superset" / "dashboard_browser.py"),
         superset.url, superset_local.ADMIN, superset.admin_password, str(IMG_DIR), *targets],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = {r["slug"]: r for r in json.loads(out.stdout)}
    for slug, r in report.items():
        timed(f"browser: {slug} dashboard to screenshot", r["seconds"])
    return report


# ------------------------------------------------------------------------------ the import

def test_the_bundle_imports_the_guides_datasets_and_four_dashboards(api, superset, charts, built):
    datasets, dashboards = built
    names = {d["table_name"] for d in _list(api, superset, "dataset")}
    assert {"metrics_customer_success", "metrics_sales", "metrics_product_analytics", "metrics_marketing",
            "metrics_unified_domains", "metrics_company_overview", "metrics_catalog"} <= names
    assert names == set(datasets)
    got = {d["slug"]: d["dashboard_title"] for d in _list(api, superset, "dashboard")}
    assert got == DASHBOARDS
    assert len(charts) == sum(len(d.charts) for d in dashboards) == 20


def test_superset_reads_as_the_read_only_role_and_sees_entity_only(api, superset):
    (db,) = _list(api, superset, "database")
    assert db["database_name"] == "metrics_warehouse"
    detail = _get(api, superset, f"/api/v1/database/{db['id']}/connection")["result"]
    assert detail["sqlalchemy_uri"].startswith("postgresql+psycopg2://metrics_reader@/")

    def sql(query):
        return api.post(f"{superset.url}/api/v1/sqllab/execute/", json={
            "database_id": db["id"], "sql": query, "runAsync": False, "schema": "entity"}, timeout=120)

    # SQL Lab refuses current_user and the catalog views; the role's own settings and
    # privileges show who is connected: read-only transactions (set on metrics_reader only), no
    # schema but entity, no write on the tables (the owner would have both)
    r = sql("show default_transaction_read_only")
    assert r.status_code == 200, r.text[:500]
    assert r.json()["data"] == [{"default_transaction_read_only": "on"}]
    r = sql("select has_schema_privilege('raw', 'usage') as raw_usage, "
            "has_table_privilege('entity.metrics_sales', 'insert') as can_insert, "
            "has_table_privilege('entity.metrics_sales', 'select') as can_select")
    assert r.json()["data"] == [{"raw_usage": False, "can_insert": False, "can_select": True}]
    denied = sql("select count(*) from raw.customers")
    assert denied.status_code != 200
    assert "permission denied for schema raw" in denied.text


def test_datasets_carry_registry_descriptions_certification_and_placeholder_warnings(api, superset):
    by_name = {d["table_name"]: d["id"] for d in _list(api, superset, "dataset")}
    cs = _get(api, superset, f"/api/v1/dataset/{by_name['metrics_customer_success']}")["result"]
    registry = load_registry()
    domain = registry["customer_success"]
    assert cs["cache_timeout"] == 86400
    assert cs["description"].startswith(domain.description)
    cols = {c["column_name"]: c for c in cs["columns"]}
    assert set(domain.table_columns) <= set(cols)
    health = domain.metric("customer_health_score")
    assert cols["customer_health_score"]["description"].startswith(health.description)
    cert = json.loads(cols["customer_health_score"]["extra"])["certification"]
    assert cert == {"certified_by": "cs-analytics (tier 1, metrics-layer registry)",
                    "details": f"{health.formula} (include/registry/customer_success.yaml)"}
    assert json.loads(cols["nps_score"]["extra"])["warning_markdown"].endswith("requires Survey integration.")
    metrics = {m["metric_name"]: m for m in cs["metrics"]}
    assert json.loads(metrics["current_mrr"]["extra"])["certification"]["certified_by"] == \
        "cs-analytics (tier 1, metrics-layer registry)"
    assert metrics["current_mrr"]["expression"] == "sum(current_mrr)"
    assert metrics["customer_health_score"]["expression"] == "avg(customer_health_score)"
    assert "Survey integration" in json.loads(metrics["nps_score"]["extra"])["warning_markdown"]
    assert "certification" not in json.loads(metrics["nps_score"]["extra"])
    assert metrics["composite_success_score"]["extra"] is None  # tier 2: neither
    sales = _get(api, superset, f"/api/v1/dataset/{by_name['metrics_sales']}")["result"]
    quota = {m["metric_name"]: m for m in sales["metrics"]}["quota_attainment_pct"]
    assert "requires Quota data" in json.loads(quota["extra"])["warning_markdown"]
    for name, ds_id in by_name.items():
        assert _get(api, superset, f"/api/v1/dataset/{ds_id}")["result"]["cache_timeout"] == 86400, name


# ------------------------------------------------------------------------ the guide's practices

def test_the_executive_dashboard_reads_the_company_overview_only(api, superset, charts):
    (exec_id,) = [d["id"] for d in _list(api, superset, "dashboard") if d["slug"] == "executive"]
    exec_charts = [c for c in charts.values() if exec_id in [d["id"] for d in c["dashboards"]]]
    assert len(exec_charts) == 8
    for c in exec_charts:
        ds = _get(api, superset, f"/api/v1/dataset/{c['query_context']['datasource']['id']}")["result"]
        read = {ds["table_name"]} if not ds["sql"] else set(re.findall(r"\bentity\.(\w+)", ds["sql"]))
        assert read == {"metrics_company_overview"}, (c["slice_name"], read)


def test_every_chart_filters_by_date(charts):
    for c in charts.values():
        ranges = [f for f in c["params"]["adhoc_filters"] if f["operator"] == "TEMPORAL_RANGE"]
        assert [f["subject"] for f in ranges] == ["metric_date"], c["slice_name"]
        for q in c["query_context"]["queries"]:
            assert {"col": "metric_date", "op": "TEMPORAL_RANGE", "val": "Last 30 days : tomorrow"} in q["filters"]


def test_the_quota_chart_says_quota_is_a_placeholder(charts):
    (quota,) = [c for c in charts.values() if "quota" in c["slice_name"].lower()]
    assert "placeholder" in quota["slice_name"]
    assert "placeholder published as NULL" in quota["description"]


# -------------------------------------------------------------------------- the browser

def test_warm_up_ran_every_chart_without_error(superset, charts):
    results = [r for rs in superset.warm_up_results.values() for r in rs]
    assert sorted(r["chart_id"] for r in results) == sorted(charts)
    assert all(r["viz_error"] is None and r["viz_status"] == "success" for r in results), results


@pytest.mark.parametrize("slug", list(DASHBOARDS))
def test_dashboard_renders_every_chart_without_error(browser, charts, slug):
    r = browser[slug]
    assert r["title"].startswith(DASHBOARDS[slug])
    assert (IMG_DIR / f"superset-{slug}.png").stat().st_size > 50_000
    shown = {c["chart_id"]: c for c in r["charts"]}
    expected = {cid for cid, c in charts.items() if any(d["dashboard_title"] == DASHBOARDS[slug]
                                                       for d in c["dashboards"])}
    assert set(shown) == expected
    for c in shown.values():
        assert not c["alerts"], f"{c['name']}: {c['alerts']}"
        assert not c["empty"], f"{c['name']} shows 'No results'"
        assert c["canvases"] or c["tables"], f"{c['name']} drew nothing: {c['text']!r}"
    assert len(r["responses"]) == len(expected)
    by_chart = {req["form_data"]["slice_id"]: req for req in r["requests"]}
    assert set(by_chart) == expected
    for resp in r["responses"]:
        assert resp["status"] == 200, resp
        sent = by_chart[json.loads(parse_qs(urlparse(resp["url"]).query)["form_data"][0])["slice_id"]]
        for q, sent_q in zip(resp["queries"], sent["queries"], strict=True):
            assert q["status"] == "success" and not q["error"], resp
            if sent_q.get("metrics") and set(sent_q["metrics"]) <= PLACEHOLDERS:
                assert q["rowcount"] == 0, f"{sent['metrics']} now has data: drop 'placeholder' from the chart"
            else:
                assert q["rowcount"] > 0, resp


@pytest.mark.parametrize("slug", list(DASHBOARDS))
def test_dashboards_are_served_from_the_warmed_cache(browser, charts, slug):
    """The saved query context of every chart is the query the browser sends, so the warm-up
    a deployment runs after each publication fills exactly the entries the dashboards read."""
    r = browser[slug]
    for req in r["requests"]:
        cid = req["form_data"]["slice_id"]
        assert req["queries"] == charts[cid]["query_context"]["queries"], charts[cid]["slice_name"]
    assert all(q["is_cached"] for resp in r["responses"] for q in resp["queries"]), r["responses"]


# ---------------------------------------------------------------------------- the data

def test_every_chart_data_endpoint_returns_rows(api, superset, charts, warehouse):
    """GET /api/v1/chart/<id>/data/ runs the chart's saved query context against PostgreSQL
    (force: past the cache). Every query returns rows; the quota series is the one placeholder,
    and its rows hold NULL, as the registry says."""
    for cid, c in charts.items():
        body = _get(api, superset, f"/api/v1/chart/{cid}/data/", force="true")
        for i, q in enumerate(body["result"]):
            assert q["status"] == "success" and not q.get("error"), (c["slice_name"], q.get("error"))
            metrics = c["query_context"]["queries"][i].get("metrics") or []
            if metrics and set(metrics) <= PLACEHOLDERS:
                # all NULL: the chart's pivot drops the empty series, so no rows come back
                assert q["rowcount"] == 0, f"{metrics} now has data: drop 'placeholder' from the chart"
                continue
            assert q["rowcount"] > 0 and q["data"], f"{c['slice_name']} query {i} returned no rows"
            numbers = [v for row in q["data"] for k, v in row.items()
                       if k != "metric_date" and isinstance(v, int | float)]
            assert any(v for v in numbers), f"{c['slice_name']}: no value in {q['data'][:3]}"


def test_big_numbers_show_the_latest_published_day(api, superset, charts, warehouse):
    (mrr,) = [cid for cid, c in charts.items() if c["slice_name"] == "Total MRR"]
    data = _get(api, superset, f"/api/v1/chart/{mrr}/data/")["result"][0]["data"]
    with warehouse.connect() as conn:
        rows = conn.execute("select metric_date, total_mrr from entity.metrics_company_overview "
                            "order by metric_date").fetchall()
    assert [d for d, _ in rows] == warehouse.dates
    got = {datetime.fromtimestamp(r["metric_date"] / 1000, UTC).date(): Decimal(str(r["total_mrr"]))
           for r in data}
    assert got == dict(rows)


def _adhoc(api, superset, dataset_id, columns, row_limit=100000):
    """A raw (non-aggregated) query through Superset's chart-data API, as Explore sends it."""
    r = api.post(f"{superset.url}/api/v1/chart/data", json={
        "datasource": {"id": dataset_id, "type": "table"}, "force": True,
        "queries": [{"columns": columns, "filters": [], "orderby": [],  # no metrics: raw rows
                     "row_limit": row_limit, "extras": {"where": "", "having": ""}}],
        "result_format": "json", "result_type": "full"}, timeout=120)
    assert r.status_code == 200, r.text[:1000]
    return r.json()["result"][0]["data"]


def test_the_guides_calculated_fields(api, superset, warehouse):
    """MRR Growth, Health Trend (partitioned by customer) and Pipeline Velocity as Superset
    computes them, against the same values worked out here from the published rows."""
    ids = {d["table_name"]: d["id"] for d in _list(api, superset, "dataset")}
    rows = _adhoc(api, superset, ids["metrics_customer_success"],
                  ["customer_id", "metric_date", "customer_health_score", "health_trend", "current_mrr",
                   "previous_month_mrr", "mrr_growth_pct"])
    assert len(rows) > 100
    previous: dict[int, float | None] = {}
    seen_trend = seen_growth = 0
    for r in sorted(rows, key=lambda r: (r["customer_id"], r["metric_date"])):
        prev = previous.get(r["customer_id"], "none")
        if prev == "none" or prev is None or r["customer_health_score"] is None:
            assert r["health_trend"] is None
        else:
            assert r["health_trend"] == pytest.approx(r["customer_health_score"] - prev, abs=1e-9)
            seen_trend += 1
        previous[r["customer_id"]] = r["customer_health_score"]
        if r["previous_month_mrr"]:
            expected = 100 * (r["current_mrr"] - r["previous_month_mrr"]) / r["previous_month_mrr"]
            assert r["mrr_growth_pct"] == pytest.approx(expected)
            seen_growth += 1
        else:
            assert r["mrr_growth_pct"] is None
    assert seen_trend > 100 and seen_growth > 100
    # the guide's LAG without PARTITION BY subtracts whichever customer's row comes before
    with warehouse.connect("metrics_reader") as conn:
        differ = conn.execute(
            "select count(*) filter (where guide is distinct from partitioned) from ("
            " select customer_health_score - lag(customer_health_score) over (order by metric_date) as guide,"
            " customer_health_score - lag(customer_health_score)"
            "   over (partition by customer_id order by metric_date) as partitioned"
            " from metrics_customer_success) as s").fetchone()[0]
    assert differ > 100
    reps = _adhoc(api, superset, ids["metrics_sales"],
                  ["rep_id", "metric_date", "pipeline_value", "avg_sales_cycle_days", "pipeline_velocity"])
    assert reps
    for r in reps:
        if r["avg_sales_cycle_days"]:
            assert r["pipeline_velocity"] == pytest.approx(r["pipeline_value"] / r["avg_sales_cycle_days"])
        else:
            assert r["pipeline_velocity"] is None
