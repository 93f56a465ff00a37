"""The Superset bundle: datasets, charts and the guide's four dashboards as one importable ZIP.

Generated, so it cannot drift from the tables: every physical column, its description, its unit
format, tier-1 certification and placeholder warning, and one saved metric per registry metric
come from include/registry/*.yaml. include/superset/ holds what the registry cannot say: the
guide's calculated fields and a few helper columns and metrics (datasets.yaml), small virtual
datasets, and one YAML per dashboard (charts and layout).

The ZIP is an "assets" bundle (metadata type `assets`): `POST /api/v1/assets/import/` overwrites
the database, datasets, charts and dashboards by their fixed UUIDs, so a registry change reaches
an existing Superset on the next import. UUIDs are derived from names (uuid5), never random.

The database URI comes from the environment (SUPERSET_WAREHOUSE_URI, or the embedded warehouse's
socket), for the read-only role `metrics_reader`; a password never goes into the bundle (the
local Superset reads it from METRICS_READER_PASSWORD at connect time).
"""

from __future__ import annotations

import copy
import io
import json
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from metrics_layer.paths import INCLUDE_DIR, LOCAL_DIR
from metrics_layer.registry import Domain, Metric, load_registry

TEMPLATE_DIR = INCLUDE_DIR / "superset"
BUNDLE_PATH = LOCAL_DIR / "superset" / "bundle.zip"
DATABASE_NAME = "metrics_warehouse"
READER_ROLE = "metrics_reader"
URI_ENV = "SUPERSET_WAREHOUSE_URI"
PASSWORD_ENV = "METRICS_READER_PASSWORD"
BUNDLE_ROOT = "metrics_layer_superset"
_NAMESPACE = uuid.UUID("6f0e2a55-3c1b-5d8e-9a57-1d2c3b4a5f60")

# units whose values add up over the entities of a day (customers, reps): their saved metric is
# a sum; everything else (ratios, scores, durations, per-user figures) is a mean
SUMMABLE_UNITS = {"usd", "users", "customers", "tickets", "devices", "units", "calls", "emails",
                  "meetings", "leads", "deals", "opportunities", "sessions"}
SQL_TYPES = {"numeric": "NUMERIC", "integer": "INTEGER", "bigint": "BIGINT", "text": "TEXT",
             "date": "DATE", "boolean": "BOOLEAN"}
ACRONYMS = {"mrr": "MRR", "dau": "DAU", "wau": "WAU", "mau": "MAU", "mqls": "MQLs", "mql": "MQL",
            "roi": "ROI", "cac": "CAC", "nps": "NPS", "csat": "CSAT", "ltv": "LTV", "mtd": "MTD",
            "pct": "(%)", "30d": "(30d)", "7d": "(7d)", "1d": "(1d)", "ab": "A/B", "id": "ID"}
VIZ_TYPES = {"big_number": "big_number", "line": "echarts_timeseries_line",
             "bar": "echarts_timeseries_bar", "heatmap": "heatmap_v2", "gauge": "gauge_chart",
             "table": "table", "mixed": "mixed_timeseries", "bubble": "bubble_v2",
             "funnel": "funnel", "pie": "pie"}
LATEST_DAY_COLUMN = "latest_published_day"


class BundleError(ValueError):
    """The templates and the registry disagree; the message says where."""


def stable_uuid(kind: str, name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}/{name}"))


def label(name: str) -> str:
    """A column's display name from its registry name: current_mrr -> Current MRR."""
    words = [ACRONYMS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------------------------ datasets

@dataclass
class Dataset:
    name: str                      # table_name in Superset
    uuid: str
    columns: dict[str, dict]       # column_name -> column config
    metrics: dict[str, dict]       # metric_name -> metric config
    config: dict = field(default_factory=dict)

    @property
    def temporal(self) -> bool:
        return "metric_date" in self.columns


def _certification(by: str, details: str) -> dict:
    return {"certification": {"certified_by": by, "details": details}}


def _metric_extra(m: Metric, domain: Domain) -> dict | None:
    if not m.implemented:
        return {"warning_markdown": f"**Not yet implemented**: a placeholder published as NULL; "
                                    f"requires {m.requires}."}
    if m.tier == "tier_1":
        return _certification(f"{m.owner} (tier 1, metrics-layer registry)",
                              f"{m.formula} (include/registry/{domain.path.name})")
    return None


def _aggregate(m: Metric, domain: Domain) -> str:
    if domain.name_column is None:  # one row per day: a mean over the days of a time bucket
        return "avg"
    return "sum" if m.unit in SUMMABLE_UNITS else "avg"


def _d3format(m: Metric, agg: str) -> str:
    if m.unit == "usd":
        return "$,.2f"
    if m.type in ("integer", "bigint"):
        return ",d"
    if m.unit == "ratio":
        return ",.4f"
    return ",.2f"


def _column_description(m: Metric) -> str:
    status = ("" if m.implemented else
              f" NOT YET IMPLEMENTED (placeholder, NULL): requires {m.requires}.")
    return (f"{m.description}{status} Unit: {m.unit}; window: {m.window}; "
            f"{m.tier.replace('_', ' ')}. Formula: {m.formula}")


def _domain_dataset(domain: Domain, extra: dict, cache_timeout: int) -> Dataset:
    cols: dict[str, dict] = {}
    key_text = {
        "metric_date": "The snapshot date D: as of 00:00 UTC on D (it sees the source rows before D).",
        domain.id_column: (f"The {domain.entity_type} id." if domain.name_column
                           else f"Always 'all': the whole {domain.entity_type}."),
    }
    for name, sql_type in domain.table_columns.items():
        col = {"column_name": name, "verbose_name": label(name), "is_dttm": name == "metric_date",
               "is_active": True, "type": SQL_TYPES[sql_type], "groupby": True, "filterable": True,
               "expression": None, "description": key_text.get(name), "python_date_format": None,
               "extra": None}
        if name == domain.name_column:
            col["description"] = f"The {domain.entity_type}'s name (today's value in the source)."
        elif name in domain.dimensions:
            col["description"] = (f"Descriptive column of the {domain.entity_type}; how it is dated "
                                  f"is in the dataset's description (as of).")
        cols[name] = col
    metrics: dict[str, dict] = {}
    for m in domain.metrics:
        extra_json = _metric_extra(m, domain)
        cols[m.name].update(description=_column_description(m), extra=extra_json)
        if not m.numeric:
            continue
        agg = _aggregate(m, domain)
        how = ("mean over the days of the time bucket (one row per day)" if domain.name_column is None
               else f"{'sum' if agg == 'sum' else 'mean'} over the {domain.entity_type}s")
        metrics[m.name] = {
            "metric_name": m.name, "verbose_name": label(m.name), "metric_type": agg,
            "expression": f"{agg}({m.name})", "description": f"{m.description} ({how}.)",
            "d3format": _d3format(m, agg), "extra": extra_json, "warning_text": None,
        }
    built_by = "the fan-in DAG metrics_unified" if domain.derived else f"the DAG {domain.table}"
    description = (f"{domain.description}\n\nGrain: {domain.grain}. As of: {domain.as_of}\n\n"
                   f"Built by {built_by}; owner {domain.owner}; definitions in "
                   f"include/registry/{domain.path.name}.")
    ds = Dataset(domain.table, stable_uuid("dataset", domain.table), cols, metrics, {
        "schema": "entity", "sql": None, "main_dttm_col": "metric_date", "description": description,
        "cache_timeout": cache_timeout,
        "extra": _certification(
            f"{domain.owner} (metrics-layer registry)",
            f"Built by {built_by} and checked by its tier-1 Great Expectations suite "
            f"(include/expectations/{domain.expectation_suite}) before publication."),
    })
    _add_extras(ds, extra)
    _add_latest_day(ds, domain.table)
    return ds


def _add_extras(ds: Dataset, extra: dict) -> None:
    for col in extra.get("columns") or []:
        base = ds.columns.get(col["column_name"]) or {
            "column_name": col["column_name"], "verbose_name": None, "is_dttm": False, "is_active": True,
            "type": None, "groupby": True, "filterable": True, "expression": None, "description": None,
            "python_date_format": None, "extra": None}
        base.update({k: (" ".join(v.split()) if k == "expression" and isinstance(v, str) else v)
                     for k, v in col.items()})
        ds.columns[col["column_name"]] = base
    for met in extra.get("metrics") or []:
        if met["metric_name"] in ds.metrics:
            raise BundleError(f"{ds.name}: metric {met['metric_name']} is already generated from the registry")
        ds.metrics[met["metric_name"]] = {
            "metric_name": met["metric_name"], "verbose_name": met.get("verbose_name"),
            "metric_type": None, "expression": " ".join(met["expression"].split()),
            "description": met.get("description"), "d3format": met.get("d3format"),
            "extra": met.get("extra"), "warning_text": None}


def _add_latest_day(ds: Dataset, table: str) -> None:
    if not ds.temporal:
        return
    ds.columns[LATEST_DAY_COLUMN] = {
        "column_name": LATEST_DAY_COLUMN, "verbose_name": "Latest published day", "is_dttm": False,
        "is_active": True, "type": "BOOLEAN", "groupby": True, "filterable": True,
        # table: a registry identifier (validated lower-case name), not user input
        "expression": f"metric_date = (select max(metric_date) from entity.{table})",  # noqa: S608
        "description": (f"True on the latest metric_date published in entity.{table}: charts that "
                        "show one day (tables, distributions) filter on it."),
        "python_date_format": None, "extra": None}


def _plain_dataset(name: str, extra: dict, cache_timeout: int) -> Dataset:
    cols = {}
    for col in extra["columns"]:
        cols[col["column_name"]] = {
            "column_name": col["column_name"], "verbose_name": col.get("verbose_name") or label(col["column_name"]),
            "is_dttm": col.get("is_dttm", col["column_name"] == "metric_date"), "is_active": True,
            "type": col.get("type"), "groupby": True, "filterable": True, "expression": None,
            "description": col.get("description"), "python_date_format": None, "extra": None}
    ds = Dataset(name, stable_uuid("dataset", name), cols, {}, {
        "schema": "entity", "sql": extra.get("sql"), "description": " ".join(extra["description"].split()),
        "main_dttm_col": extra.get("main_dttm_col", "metric_date" if "metric_date" in cols else None),
        "cache_timeout": cache_timeout, "extra": None})
    _add_extras(ds, {"metrics": extra.get("metrics")})
    return ds


def build_datasets(registry: dict[str, Domain] | None = None,
                   template: dict | None = None) -> dict[str, Dataset]:
    registry = registry or load_registry()
    template = template or load_yaml(TEMPLATE_DIR / "datasets.yaml")
    by_table = {d.table: d for d in registry.values()}
    timeout = int(template["cache_timeout"])
    out: dict[str, Dataset] = {}
    for table, extra in template["physical"].items():
        if table in by_table:
            out[table] = _domain_dataset(by_table[table], extra, timeout)
        else:  # the unified table and the catalog: columns described in the template
            ds = _plain_dataset(table, {**extra, "columns": [
                {"type": None, **c} for c in extra["columns"]]}, timeout)
            if table == "metrics_catalog":
                ds.config["extra"] = _certification("metrics-platform (metrics-layer registry)",
                                                    "Written from include/registry/*.yaml by every migration.")
            _add_latest_day(ds, table)
            out[table] = ds
    for table in by_table:
        if table not in out:
            raise BundleError(f"include/superset/datasets.yaml: registry table {table} has no dataset")
    for name, extra in template.get("virtual", {}).items():
        domains = {n: registry[n] for n in extra["registry_columns"]}
        for dname, cols in extra["registry_columns"].items():
            missing = sorted(set(cols) - set(domains[dname].table_columns))
            if missing:
                raise BundleError(f"virtual dataset {name}: {missing} are no longer columns of "
                                  f"entity.{domains[dname].table} in the registry")
            if f"entity.{domains[dname].table}" not in extra["sql"]:
                raise BundleError(f"virtual dataset {name}: its SQL does not read entity.{domains[dname].table}")
        ds = _plain_dataset(name, extra, timeout)
        _add_latest_day(ds, next(iter(domains.values())).table)
        out[name] = ds
    return out


def dataset_yaml(ds: Dataset, database_uuid: str) -> dict:
    cfg = {"table_name": ds.name, "main_dttm_col": ds.config.get("main_dttm_col"),
           "description": ds.config.get("description"), "default_endpoint": None, "offset": 0,
           "cache_timeout": ds.config.get("cache_timeout"), "schema": ds.config.get("schema"),
           "sql": ds.config.get("sql"), "params": None, "template_params": None,
           "filter_select_enabled": True, "fetch_values_predicate": None,
           "extra": ds.config.get("extra"), "normalize_columns": False, "uuid": ds.uuid,
           "metrics": list(ds.metrics.values()), "columns": list(ds.columns.values()),
           "version": "1.0.0", "database_uuid": database_uuid}
    return cfg


# ------------------------------------------------------------------------------ charts

@dataclass
class Chart:
    key: str
    dashboard: str
    title: str
    viz: str
    dataset: str
    description: str
    form_data: dict
    uuid: str
    placeholder_id: int

    @property
    def viz_type(self) -> str:
        return VIZ_TYPES[self.viz]


def _adhoc_filters(spec: dict, ds: Dataset, time_range: str) -> list[dict]:
    filters = []
    if ds.temporal and spec.get("time_range", True):
        filters.append({"clause": "WHERE", "subject": "metric_date", "operator": "TEMPORAL_RANGE",
                        "comparator": spec.get("time_range_value", time_range),
                        "expressionType": "SIMPLE"})
    if spec.get("latest_day"):
        filters.append({"clause": "WHERE", "subject": LATEST_DAY_COLUMN, "operator": "IS TRUE",
                        "comparator": None, "expressionType": "SIMPLE"})
    for f in spec.get("filters") or []:
        filters.append({"clause": "WHERE", "subject": f["column"], "operator": f["op"],
                        "comparator": f.get("value"), "expressionType": "SIMPLE"})
    return filters


# defaults per visualization, as the chart's Explore panel would save them
DEFAULTS: dict[str, dict] = {
    "big_number": {"x_axis": "metric_date", "time_grain_sqla": "P1D", "compare_lag": 1,
                   "compare_suffix": "vs. the day before", "show_timestamp": True,
                   "show_trend_line": True, "start_y_axis_at_zero": False, "header_font_size": 0.4,
                   "subheader_font_size": 0.15, "rolling_type": "None"},
    "line": {"x_axis": "metric_date", "time_grain_sqla": "P1D", "groupby": [], "row_limit": 10000,
             "order_desc": True, "show_legend": True, "legendType": "scroll",
             "legendOrientation": "top", "rich_tooltip": True, "x_axis_time_format": "smart_date",
             "markerEnabled": True, "markerSize": 6, "truncateYAxis": False, "y_axis_bounds": [None, None],
             "comparison_type": "values", "annotation_layers": [], "sort_series_type": "sum"},
    "bar": {"x_axis": "metric_date", "time_grain_sqla": "P1D", "groupby": [], "row_limit": 10000,
            "order_desc": True, "orientation": "vertical", "show_legend": True, "legendType": "scroll",
            "legendOrientation": "top", "rich_tooltip": True, "x_axis_time_format": "smart_date",
            "truncateYAxis": False, "y_axis_bounds": [None, None], "comparison_type": "values",
            "annotation_layers": [], "sort_series_type": "sum"},
    "heatmap": {"time_grain_sqla": "P1D", "linear_color_scheme": "superset_seq_1",
                "normalize_across": "heatmap", "show_legend": True, "show_values": True,
                "show_percentage": False, "legend_type": "continuous", "xscale_interval": -1,
                "yscale_interval": -1, "left_margin": "auto", "bottom_margin": 30,
                "sort_x_axis": "alpha_asc", "sort_y_axis": "alpha_asc", "row_limit": 10000,
                "value_bounds": [None, None], "x_axis_time_format": "smart_date"},
    "gauge": {"groupby": [], "row_limit": 10, "start_angle": 225, "end_angle": -45,
              "font_size": 15, "split_number": 10, "show_progress": True, "overlap": True,
              "animation": True, "show_pointer": True, "show_axis_line_ticks": False,
              "show_split_line": False, "color_scheme": "supersetColors"},
    "table": {"server_pagination": False, "server_page_length": 10, "include_search": True,
              "show_cell_bars": True, "color_pn": True, "allow_rearrange_columns": False,
              "table_timestamp_format": "smart_date", "percent_metrics": [], "order_desc": True},
    "mixed": {"x_axis": "metric_date", "time_grain_sqla": "P1D", "groupby": [], "groupby_b": [],
              "row_limit": 10000, "row_limit_b": 10000, "order_desc": True, "order_desc_b": True,
              "yAxisIndex": 0, "yAxisIndexB": 1, "show_legend": True, "legendType": "scroll",
              "legendOrientation": "top", "rich_tooltip": True, "x_axis_time_format": "smart_date",
              "truncateYAxis": False, "y_axis_bounds": [None, None], "annotation_layers": [],
              "markerEnabled": True, "markerSize": 6, "markerEnabledB": True, "markerSizeB": 6,
              "comparison_type": "values", "comparison_type_b": "values"},
    "bubble": {"row_limit": 2000, "max_bubble_size": 25, "opacity": 0.6, "show_legend": True,
               "legendType": "scroll", "legendOrientation": "top", "x_axis_title_margin": 30,
               "y_axis_title_margin": 30, "y_axis_title_position": "Left", "xAxisFormat": "SMART_NUMBER",
               "y_axis_format": "SMART_NUMBER", "truncateXAxis": True, "truncateYAxis": False,
               "xAxisBounds": [None, None], "y_axis_bounds": [None, None], "tooltipSizeFormat": "$,.0f",
               "order_desc": True},
    "funnel": {"row_limit": 10, "sort_by_metric": True, "show_legend": True,
               "legendOrientation": "top", "show_labels": True, "show_tooltip_labels": True,
               "label_type": "key_value", "tooltip_label_type": "key_value_percent",
               "percent_calculation_type": "first_step", "color_scheme": "supersetColors"},
    "pie": {"row_limit": 100, "sort_by_metric": True, "show_legend": True, "legendType": "scroll",
            "legendOrientation": "top", "show_labels": True, "label_type": "key_percent",
            "labels_outside": True, "outerRadius": 70, "innerRadius": 30, "donut": True,
            "show_total": True, "color_scheme": "supersetColors", "label_line": True,
            "show_labels_threshold": 5},
}


def build_chart(key: str, spec: dict, dashboard: str, ds: Dataset, time_range: str,
                placeholder_id: int) -> Chart:
    viz = spec["viz"]
    if viz not in VIZ_TYPES:
        raise BundleError(f"{dashboard}/{key}: unknown viz {viz!r} (known: {sorted(VIZ_TYPES)})")
    fd = {"datasource": f"{placeholder_id}__table", "viz_type": VIZ_TYPES[viz],
          **copy.deepcopy(DEFAULTS[viz]), **copy.deepcopy(spec.get("params") or {})}
    fd["adhoc_filters"] = _adhoc_filters(spec, ds, time_range)
    if viz == "mixed":
        fd["adhoc_filters_b"] = copy.deepcopy(fd["adhoc_filters"])
    if not ds.temporal:
        fd.pop("time_grain_sqla", None)
    chart = Chart(key, dashboard, spec["title"], viz, ds.name, " ".join(spec["description"].split()),
                  fd, stable_uuid("chart", f"{dashboard}/{key}"), placeholder_id)
    _check_references(chart, ds)
    return chart


def _metric_refs(fd: dict) -> list[str]:
    refs: list = []
    for k in ("metric", "x", "y", "size", "timeseries_limit_metric", "secondary_metric"):
        if fd.get(k):
            refs.append(fd[k])
    for k in ("metrics", "metrics_b", "percent_metrics"):
        refs += fd.get(k) or []
    return [r for r in refs if isinstance(r, str)]


def _column_refs(fd: dict) -> list[str]:
    refs = []
    for k in ("x_axis", "entity", "series"):
        if isinstance(fd.get(k), str):
            refs.append(fd[k])
    for k in ("groupby", "groupby_b", "all_columns"):
        v = fd.get(k) or []
        refs += [v] if isinstance(v, str) else list(v)
    refs += [f["subject"] for f in fd.get("adhoc_filters", [])]
    refs += [json.loads(o)[0] for o in fd.get("order_by_cols") or []]
    return refs


def _check_references(chart: Chart, ds: Dataset) -> None:
    where = f"include/superset/dashboards/{chart.dashboard}.yaml: chart {chart.key}"
    for m in _metric_refs(chart.form_data):
        if m not in ds.metrics:
            raise BundleError(f"{where}: dataset {ds.name} has no metric {m!r}")
    for c in _column_refs(chart.form_data):
        if c not in ds.columns:
            raise BundleError(f"{where}: dataset {ds.name} has no column {c!r}")
    if chart.viz_type.startswith("echarts_timeseries") or chart.viz in ("mixed", "big_number"):
        x = chart.form_data.get("x_axis")
        if x == "metric_date" and not ds.temporal:
            raise BundleError(f"{where}: dataset {ds.name} has no metric_date")


# ------------------------------------------------------------------------- query contexts
# Saved with each chart: GET /api/v1/chart/<id>/data/ and the cache warm-up run it. It is the
# query the chart's own front-end code (buildQuery of Superset 6.1) sends for the same form data,
# so a warm-up fills the very cache entries the dashboards read; make test-superset compares the
# two for every chart, in a real browser.

def _base_query(fd: dict, filters_key: str = "adhoc_filters", row_limit_key: str = "row_limit") -> dict:
    filters, where = [], []
    for f in fd.get(filters_key) or []:
        if f["expressionType"] == "SQL":
            where.append(f"({f['sqlExpression']})")
        else:
            filters.append({"col": f["subject"], "op": f["operator"], "val": f.get("comparator")})
    extras = {"having": "", "where": " AND ".join(where)}
    if fd.get("time_grain_sqla"):
        extras = {"time_grain_sqla": fd["time_grain_sqla"], **extras}
    q = {"filters": filters, "extras": extras, "applied_time_extras": {}, "columns": [],
         "metrics": [], "orderby": [], "annotation_layers": [], "row_limit": fd.get(row_limit_key),
         "series_limit": 0, "group_others_when_limit_reached": False,
         "order_desc": fd.get("order_desc", True), "url_params": {}, "custom_params": {},
         "custom_form_data": {}}
    return q


def _axis(fd: dict) -> dict:
    x = fd.get("x_axis", "metric_date")
    return {"timeGrain": fd.get("time_grain_sqla", "P1D"), "columnType": "BASE_AXIS",
            "sqlExpression": x, "label": x, "expressionType": "SQL", "isColumnReference": True}


def _pivot(index: str, columns: list, metrics: list, drop_missing: bool) -> dict:
    return {"operation": "pivot", "options": {
        "index": [index], "columns": list(columns),
        "aggregates": {m: {"operator": "mean"} for m in metrics}, "drop_missing_columns": drop_missing}}


def _xy_query(fd: dict) -> dict:
    """echarts_timeseries_line / _bar (Timeseries/buildQuery.ts)."""
    q = _base_query(fd)
    groupby = list(fd.get("groupby") or [])
    metrics = list(fd["metrics"])
    x = fd.get("x_axis", "metric_date")
    post = [_pivot(x, groupby, metrics, False)]
    if groupby and len(metrics) == 1:
        post.append({"operation": "rename", "options": {"columns": {metrics[0]: None}, "level": 0,
                                                         "inplace": True}})
    if fd.get("x_axis_sort"):
        post.append({"operation": "sort", "options": {"by": fd["x_axis_sort"],
                                                      "ascending": fd.get("x_axis_sort_asc", True)}})
    post.append({"operation": "flatten"})
    q.update(columns=[_axis(fd), *groupby], metrics=metrics, orderby=[[metrics[0], False]],
             series_columns=groupby, time_offsets=[], post_processing=post)
    return q


def _mixed_query(fd: dict, suffix: str) -> dict:
    """mixed_timeseries, query A (suffix "") or B ("_b") (MixedTimeseries/buildQuery.ts)."""
    q = _base_query(fd, f"adhoc_filters{suffix}", f"row_limit{suffix}")
    metrics = list(fd[f"metrics{suffix}"])
    groupby = list(fd.get(f"groupby{suffix}") or [])
    del q["order_desc"]
    q.update(columns=[_axis(fd), *groupby], metrics=metrics, series_columns=groupby,
             time_offsets=[], orderby=[[metrics[0], False]],
             post_processing=[_pivot(fd.get("x_axis", "metric_date"), groupby, metrics, True),
                              {"operation": "flatten"}])
    return q


def query_context(chart: Chart) -> dict:
    fd = chart.form_data
    viz = chart.viz
    q = _base_query(fd)
    if viz == "big_number":
        del q["row_limit"], q["orderby"]
        q.update(columns=[_axis(fd)], metrics=[fd["metric"]],
                 post_processing=[_pivot(fd.get("x_axis", "metric_date"), [], [fd["metric"]], True),
                                  {"operation": "flatten"}])
        queries = [q]
    elif viz in ("line", "bar"):
        queries = [_xy_query(fd)]
    elif viz == "mixed":
        queries = [_mixed_query(fd, ""), _mixed_query(fd, "_b")]
    elif viz == "heatmap":
        x, y = fd["x_axis"], fd["groupby"]
        rank = {"metric": fd["metric"]}
        if fd.get("normalize_across") in ("x", "y"):
            rank["group_by"] = x if fd["normalize_across"] == "x" else y
        orderby = [[col, fd[key].endswith("asc")] for col, key in ((x, "sort_x_axis"), (y, "sort_y_axis"))
                   if fd.get(key) and "value" not in fd[key]]
        q.update(columns=[_axis(fd), y], metrics=[fd["metric"]], orderby=orderby,
                 post_processing=[{"operation": "rank", "options": rank}])
        queries = [q]
    elif viz == "gauge":
        del q["orderby"]
        q.update(columns=list(fd.get("groupby") or []), metrics=[fd["metric"]])
        queries = [q]
    elif viz in ("funnel", "pie"):
        q.update(columns=list(fd["groupby"]), metrics=[fd["metric"]],
                 orderby=[[fd["metric"], False]] if fd.get("sort_by_metric") else [])
        if viz == "pie":
            q["post_processing"] = [{"operation": "contribution", "options": {
                "columns": [fd["metric"]], "rename_columns": [f"{fd['metric']}__contribution"]}}]
        queries = [q]
    elif viz == "bubble":
        del q["orderby"]
        q.update(columns=[fd["entity"], fd["series"]], metrics=[fd["x"], fd["y"], fd["size"]])
        queries = [q]
    elif viz == "table":
        if fd["query_mode"] == "raw":
            del q["metrics"]
            q.update(columns=list(fd["all_columns"]),
                     orderby=[json.loads(o) for o in fd.get("order_by_cols") or []])
        else:
            sort = fd.get("timeseries_limit_metric")
            q.update(columns=list(fd["groupby"]), metrics=list(fd["metrics"]),
                     orderby=[[sort or fd["metrics"][0], not fd.get("order_desc", True)]])
            if sort:
                q["series_limit_metric"] = sort
        q.update(post_processing=[], time_offsets=[])
        queries = [q]
    else:  # pragma: no cover - VIZ_TYPES is checked in build_chart
        raise BundleError(viz)
    return {"datasource": {"id": int(fd["datasource"].split("__")[0]), "type": "table"},
            "force": False, "queries": queries, "form_data": fd,
            "result_format": "json", "result_type": "full"}


def chart_yaml(chart: Chart, ds: Dataset) -> dict:
    return {"slice_name": chart.title, "description": chart.description, "certified_by": None,
            "certification_details": None, "viz_type": chart.viz_type, "params": chart.form_data,
            "query_context": json.dumps(query_context(chart)), "cache_timeout": None,
            "uuid": chart.uuid, "version": "1.0.0", "dataset_uuid": ds.uuid}


# ---------------------------------------------------------------------------- dashboards

@dataclass
class Dashboard:
    name: str
    title: str
    slug: str
    uuid: str
    charts: dict[str, Chart]
    position: dict
    metadata: dict
    order: int


def _position(name: str, spec: dict, charts: dict[str, Chart]) -> dict:
    pos: dict[str, Any] = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"id": "HEADER_ID", "type": "HEADER", "meta": {"text": spec["title"]}},
    }
    rows = []
    if spec.get("intro"):
        rows.append({"height": spec.get("intro_height", 12),
                     "items": [("MARKDOWN", "intro", 12, " ".join(spec["intro"].split()))]})
    for row in spec["layout"]:
        if sum(w for _, w in row["charts"]) > 12:
            raise BundleError(f"include/superset/dashboards/{name}.yaml: a row is wider than 12")
        rows.append({"height": row["height"], "items": [("CHART", k, w, None) for k, w in row["charts"]]})
    placed = set()
    for i, row in enumerate(rows):
        row_id = f"ROW-{name}-{i}"
        pos["GRID_ID"]["children"].append(row_id)
        pos[row_id] = {"type": "ROW", "id": row_id, "children": [], "parents": ["ROOT_ID", "GRID_ID"],
                       "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        for kind, key, width, text in row["items"]:
            node_id = f"{kind}-{name}-{key}"
            pos[row_id]["children"].append(node_id)
            meta: dict[str, Any] = {"width": width, "height": row["height"]}
            if kind == "CHART":
                if key not in charts:
                    raise BundleError(f"include/superset/dashboards/{name}.yaml: layout names unknown chart {key}")
                c = charts[key]
                meta.update(chartId=c.placeholder_id, uuid=c.uuid, sliceName=c.title)
                placed.add(key)
            else:
                meta["code"] = text
            pos[node_id] = {"type": kind, "id": node_id, "children": [],
                            "parents": ["ROOT_ID", "GRID_ID", row_id], "meta": meta}
    if placed != set(charts):
        raise BundleError(f"include/superset/dashboards/{name}.yaml: charts not in the layout: "
                          f"{sorted(set(charts) - placed)}")
    return pos


def _metadata(name: str, charts: dict[str, Chart]) -> dict:
    return {
        "color_scheme": "supersetColors", "refresh_frequency": 0, "expanded_slices": {},
        "label_colors": {}, "timed_refresh_immune_slices": [], "default_filters": "{}",
        "cross_filters_enabled": True, "chart_configuration": {}, "shared_label_colors": [],
        "color_scheme_domain": [],
        "global_chart_configuration": {"scope": {"rootPath": ["ROOT_ID"], "excluded": []}},
        "native_filter_configuration": [{
            "id": f"NATIVE_FILTER-{name}-date", "name": "Date", "filterType": "filter_time",
            "type": "NATIVE_FILTER", "targets": [{}], "controlValues": {}, "cascadeParentIds": [],
            "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
            "scope": {"rootPath": ["ROOT_ID"], "excluded": []},
            "description": ("Overrides every chart's own date range (by default the last 30 days "
                            "through today). Charts of one day show the latest published day."),
        }],
    }


def build_dashboards(datasets: dict[str, Dataset], template_dir: Path = TEMPLATE_DIR,
                     time_range: str | None = None) -> list[Dashboard]:
    time_range = time_range or load_yaml(template_dir / "datasets.yaml")["time_range"]
    out = []
    next_id = 1
    for path in sorted((template_dir / "dashboards").glob("*.yaml")):
        spec = load_yaml(path)
        name = path.stem
        charts = {}
        for key, cspec in spec["charts"].items():
            if cspec["dataset"] not in datasets:
                raise BundleError(f"{path.name}: chart {key} reads unknown dataset {cspec['dataset']}")
            charts[key] = build_chart(key, cspec, name, datasets[cspec["dataset"]], time_range, next_id)
            next_id += 1
        out.append(Dashboard(name, spec["title"], spec["slug"], stable_uuid("dashboard", name), charts,
                             _position(name, spec, charts), _metadata(name, charts), spec.get("order", 99)))
    return sorted(out, key=lambda d: d.order)


def dashboard_yaml(d: Dashboard) -> dict:
    return {"dashboard_title": d.title, "description": None, "css": "", "slug": d.slug,
            "certified_by": None, "certification_details": None, "published": True,
            "uuid": d.uuid, "position": d.position, "metadata": d.metadata, "version": "1.0.0"}


# ------------------------------------------------------------------------------- database

def database_yaml(uri: str) -> dict:
    return {"database_name": DATABASE_NAME, "sqlalchemy_uri": uri, "cache_timeout": None,
            "expose_in_sqllab": True, "allow_run_async": False, "allow_ctas": False,
            "allow_cvas": False, "allow_dml": False, "allow_file_upload": False,
            "extra": {"metadata_params": {}, "engine_params": {}, "metadata_cache_timeout": {},
                      "schemas_allowed_for_file_upload": []},
            "impersonate_user": False, "uuid": stable_uuid("database", DATABASE_NAME),
            "version": "1.0.0"}


def check_uri(uri: str, allow_other_role: bool = False) -> str:
    """The URI Superset connects with: the read-only role, no password inside."""
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if url.password:
        raise BundleError(f"{URI_ENV} holds a password: leave it out and set {PASSWORD_ENV} "
                          "(read at connect time, never written into the bundle)")
    if url.username != READER_ROLE and not allow_other_role:
        raise BundleError(f"Superset must connect as the read-only role {READER_ROLE}, not "
                          f"{url.username!r} (docs/operations.md, 'The read-only BI role')")
    return uri


# --------------------------------------------------------------------------------- bundle

def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _dump(obj: dict) -> str:
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=100)


def bundle_files(uri: str) -> dict[str, str]:
    """Every file of the bundle, path -> YAML text."""
    datasets = build_datasets()
    dashboards = build_dashboards(datasets)
    db = database_yaml(uri)
    files = {"metadata.yaml": _dump({"version": "1.0.0", "type": "assets",
                                     "timestamp": datetime.now(UTC).isoformat()}),
             f"databases/{DATABASE_NAME}.yaml": _dump(db)}
    for ds in datasets.values():
        files[f"datasets/{DATABASE_NAME}/{ds.name}.yaml"] = _dump(dataset_yaml(ds, db["uuid"]))
    for d in dashboards:
        for c in d.charts.values():
            files[f"charts/{d.name}_{c.key}.yaml"] = _dump(chart_yaml(c, datasets[c.dataset]))
        files[f"dashboards/{d.name}.yaml"] = _dump(dashboard_yaml(d))
    return files


def write_bundle(uri: str, path: Path = BUNDLE_PATH) -> Path:
    files = bundle_files(check_uri(uri))
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(f"{BUNDLE_ROOT}/{name}", text)
    path.write_bytes(buf.getvalue())
    return path


def embedded_uri(database: str = "metrics") -> str:
    """The BI role's URI for the embedded warehouse (Unix socket, no password)."""
    from metrics_layer import local

    server = local.embedded_server()
    return f"postgresql+psycopg2://{READER_ROLE}@/{database}?host={local.socket_dir(server)}"
