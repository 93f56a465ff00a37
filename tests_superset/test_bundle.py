"""The Superset bundle as generated (no Superset needed): it follows the registry, holds the
guide's dashboards chart for chart, and refuses what would drift or leak."""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile

import pytest
import yaml

from metrics_layer import superset_bundle as sb
from metrics_layer.registry import load_registry

READER = "postgresql+psycopg2://metrics_reader@/metrics?host=/tmp/sock"


@pytest.fixture(scope="module")
def datasets():
    return sb.build_datasets()


@pytest.fixture(scope="module")
def dashboards(datasets):
    return {d.name: d for d in sb.build_dashboards(datasets)}


def test_every_registry_column_and_metric_is_in_its_dataset(datasets):
    for domain in load_registry().values():
        ds = datasets[domain.table]
        assert set(domain.table_columns) <= set(ds.columns)
        for m in domain.metrics:
            col = ds.columns[m.name]
            assert col["description"].startswith(m.description)
            assert m.formula in col["description"]
            extra = col["extra"] or {}
            if m.numeric:
                assert ds.metrics[m.name]["extra"] == col["extra"]
            else:
                assert m.name not in ds.metrics  # a text metric (a channel's name) is no aggregate
            if not m.implemented:
                assert extra == {"warning_markdown": f"**Not yet implemented**: a placeholder published "
                                                     f"as NULL; requires {m.requires}."}
            elif m.tier == "tier_1":
                assert extra["certification"]["certified_by"] == f"{m.owner} (tier 1, metrics-layer registry)"
                assert extra["certification"]["details"].startswith(m.formula)
            else:
                assert not extra


def test_saved_metrics_sum_what_adds_up_and_average_the_rest(datasets):
    cs, sales, product = (datasets[t] for t in ("metrics_customer_success", "metrics_sales",
                                                 "metrics_product_analytics"))
    assert cs.metrics["current_mrr"]["expression"] == "sum(current_mrr)"
    assert cs.metrics["monthly_active_users"]["expression"] == "sum(monthly_active_users)"
    assert cs.metrics["customer_health_score"]["expression"] == "avg(customer_health_score)"
    assert cs.metrics["features_adopted"]["expression"] == "avg(features_adopted)"
    assert sales.metrics["win_rate"]["expression"] == "avg(win_rate)"
    # one row per day: a mean over the days of a time bucket, never a sum of daily MAUs
    assert product.metrics["monthly_active_users"]["expression"] == "avg(monthly_active_users)"


def test_the_guides_calculated_fields(datasets):
    cs, sales = datasets["metrics_customer_success"], datasets["metrics_sales"]
    assert cs.columns["mrr_growth_pct"]["expression"] == \
        "100.0 * (current_mrr - previous_month_mrr) / nullif(previous_month_mrr, 0)"
    trend = cs.columns["health_trend"]
    assert trend["expression"] == ("customer_health_score - lag(customer_health_score) "
                                   "over (partition by customer_id order by metric_date)")
    assert "Partitioned by customer" in trend["description"]
    assert sales.columns["pipeline_velocity"]["expression"] == "pipeline_value / nullif(avg_sales_cycle_days, 0)"


def test_datasets_cache_for_a_day_and_name_the_latest_day(datasets):
    reads = {"sales_funnel": "metrics_sales", "product_user_segments": "metrics_product_analytics",
             "company_health_bands": "metrics_company_overview"}
    for name, ds in datasets.items():
        assert ds.config["cache_timeout"] == 86400, name
        if ds.temporal:
            assert ds.columns[sb.LATEST_DAY_COLUMN]["expression"] == \
                f"metric_date = (select max(metric_date) from entity.{reads.get(name, name)})"  # noqa: S608
    assert not datasets["metrics_catalog"].temporal


def test_dashboards_hold_the_guides_charts(dashboards):
    def kinds(name):
        return sorted((c.viz, c.title) for c in dashboards[name].charts.values())

    assert kinds("executive") == sorted([
        ("big_number", "Total MRR"), ("big_number", "Active Customers"),
        ("big_number", "Overall Health Score"), ("line", "MRR trend"), ("line", "DAU/MAU trend"),
        ("heatmap", "Customer health by segment"), ("gauge", "Pipeline coverage"), ("gauge", "Win rate")])
    assert [v for v, _ in kinds("customer_success")] == ["bar", "bubble", "mixed", "table"]
    assert [v for v, _ in kinds("sales")] == ["bar", "funnel", "mixed", "table"]
    assert [v for v, _ in kinds("product")] == ["bar", "heatmap", "line", "pie"]
    cs = dashboards["customer_success"].charts
    assert cs["at_risk"].form_data["order_by_cols"] == ['["current_mrr", false]']
    quota = dashboards["sales"].charts["bookings_vs_quota"]
    assert "placeholder" in quota.title and quota.form_data["metrics_b"] == ["quota_attainment_pct"]


def test_the_executive_dashboard_reads_the_company_overview_only(dashboards, datasets):
    for c in dashboards["executive"].charts.values():
        ds = datasets[c.dataset]
        read = {ds.name} if not ds.config["sql"] else set(re.findall(r"\bentity\.(\w+)", ds.config["sql"]))
        assert read == {"metrics_company_overview"}, c.key


def test_every_chart_filters_by_date_and_has_a_query_context(dashboards):
    for d in dashboards.values():
        for c in d.charts.values():
            ranges = [f for f in c.form_data["adhoc_filters"] if f["operator"] == "TEMPORAL_RANGE"]
            assert [(f["subject"], f["comparator"]) for f in ranges] == [("metric_date", "Last 30 days : tomorrow")]
            qc = sb.query_context(c)
            assert qc["form_data"] is c.form_data
            for q in qc["queries"]:
                assert {"col": "metric_date", "op": "TEMPORAL_RANGE", "val": "Last 30 days : tomorrow"} in q["filters"]


def test_dashboard_positions_link_charts_by_uuid(dashboards):
    for d in dashboards.values():
        nodes = [n for n in d.position.values() if isinstance(n, dict) and n.get("type") == "CHART"]
        assert sorted(n["meta"]["uuid"] for n in nodes) == sorted(c.uuid for c in d.charts.values())
        assert all(isinstance(n["meta"]["chartId"], int) for n in nodes)
        (date_filter,) = d.metadata["native_filter_configuration"]
        assert date_filter["filterType"] == "filter_time"


def test_the_bundle_is_stable_and_holds_no_password():
    first, second = sb.bundle_files(READER), sb.bundle_files(READER)
    first.pop("metadata.yaml"), second.pop("metadata.yaml")
    assert first == second  # fixed UUIDs: a re-import overwrites, never duplicates
    db = yaml.safe_load(first[f"databases/{sb.DATABASE_NAME}.yaml"])
    assert db["sqlalchemy_uri"] == READER
    assert db["uuid"] == sb.stable_uuid("database", sb.DATABASE_NAME)


def test_the_zip_is_an_assets_bundle(tmp_path):
    path = sb.write_bundle(READER, tmp_path / "b.zip")
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
        names = z.namelist()
        meta = yaml.safe_load(z.read(f"{sb.BUNDLE_ROOT}/metadata.yaml"))
        chart = yaml.safe_load(z.read(f"{sb.BUNDLE_ROOT}/charts/executive_total_mrr.yaml"))
    assert meta["type"] == "assets" and meta["version"] == "1.0.0"
    assert len([n for n in names if "/dashboards/" in n]) == 4
    assert len([n for n in names if "/charts/" in n]) == 20
    assert json.loads(chart["query_context"])["queries"][0]["metrics"] == ["total_mrr"]


@pytest.mark.parametrize("uri, message", [
    ("postgresql+psycopg2://postgres@/metrics?host=/tmp/sock", "must connect as the read-only role"),
    ("postgresql+psycopg2://metrics_reader:s3cret@db:5432/metrics", "holds a password"),
])
def test_the_uri_must_be_the_read_only_role_without_a_password(uri, message):
    with pytest.raises(sb.BundleError, match=message):
        sb.check_uri(uri)


def _registry_copy(tmp_path, edit):
    src = sb.TEMPLATE_DIR.parent / "registry"
    dst = tmp_path / "registry"
    shutil.copytree(src, dst)
    edit(dst)
    return load_registry(dst)


def test_a_new_registry_metric_reaches_its_dataset(tmp_path):
    def add_metric(d):
        path = d / "sales.yaml"
        path.write_text(path.read_text() + """
  - name: meetings_per_deal
    description: Meetings held per deal won.
    formula: meetings_held_30d / deals won in 30 days.
    unit: ratio
    rounding: 2
    window: 30d
    direction: neutral
    tier: tier_1
    status: implemented
""")
    ds = sb.build_datasets(_registry_copy(tmp_path, add_metric))["metrics_sales"]
    assert ds.columns["meetings_per_deal"]["description"].startswith("Meetings held per deal won.")
    assert ds.metrics["meetings_per_deal"]["extra"]["certification"]["details"].startswith("meetings_held_30d")


def test_a_virtual_dataset_fails_when_its_registry_column_goes(tmp_path):
    def rename(d):
        path = d / "product_analytics.yaml"
        path.write_text(path.read_text().replace("- name: power_users\n", "- name: heavy_users\n"))
    with pytest.raises(sb.BundleError, match=r"product_user_segments: \['power_users'\]"):
        sb.build_datasets(_registry_copy(tmp_path, rename))


def test_a_chart_naming_an_unknown_metric_fails(tmp_path, datasets):
    tdir = tmp_path / "superset"
    shutil.copytree(sb.TEMPLATE_DIR, tdir)
    path = tdir / "dashboards" / "executive.yaml"
    path.write_text(path.read_text().replace("params: {metric: total_mrr,", "params: {metric: total_mrr_typo,"))
    with pytest.raises(sb.BundleError, match="dataset metrics_company_overview has no metric 'total_mrr_typo'"):
        sb.build_dashboards(datasets, tdir)
