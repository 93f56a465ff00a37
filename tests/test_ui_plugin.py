"""The Airflow UI plugin (plugins/metrics_layer_ui.py): its FastAPI app against a real warehouse
(the embedded test database), a broken or slow warehouse, and Airflow's own plugin loader."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from datetime import date

import psycopg
import pytest
from fastapi.testclient import TestClient

from conftest import ROOT
from metrics_layer import pipeline
from metrics_layer.registry import load_registry

PLUGIN_FILE = ROOT / "plugins" / "metrics_layer_ui.py"
UNIFIED = "metrics_unified_domains"
# the pipeline engineer's table, created here too in case ensure_schema does not have it yet
VALIDATION_LOG_DDL = """
create table if not exists metrics_ops.validation_log (
    target text not null, metric_date date not null, run_id text not null,
    validated_at timestamptz not null, success boolean not null, evaluated integer not null,
    failures jsonb not null default '[]',
    primary key (target, metric_date, run_id)
)"""
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def ui():
    """The plugin module, imported from its file the way Airflow's loader does."""
    spec = importlib.util.spec_from_file_location("metrics_layer_ui_under_test", PLUGIN_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def client(ui):
    return TestClient(ui.app)


@pytest.fixture
def tables():
    return [d.table for d in load_registry().values()]


@pytest.fixture
def warehouse(conn):
    pipeline.ensure_schema(conn)
    conn.execute(VALIDATION_LOG_DDL)
    return conn


def _publish(conn, target, metric_date, published_at, run_id, rows):
    conn.execute("insert into metrics_ops.publish_log (target, metric_date, published_at, run_id, row_count) "
                 "values (%s, %s, %s, %s, %s)", (target, metric_date, published_at, run_id, rows))


def _validate(conn, target, metric_date, run_id, validated_at, success, evaluated, failures=()):
    conn.execute("insert into metrics_ops.validation_log (target, metric_date, run_id, validated_at, "
                 "success, evaluated, failures) values (%s, %s, %s, %s, %s, %s, %s)",
                 (target, metric_date, run_id, validated_at, success, evaluated, json.dumps(list(failures))))


FAILURES = [
    {"expectation": "expect_column_values_to_not_be_null", "column": "health_score",
     "detail": "3 unexpected of 120"},
    {"expectation": "expect_table_row_count_to_equal", "column": None, "detail": f"observed 0 {XSS}"},
]


@pytest.fixture
def history(warehouse, tables):
    """Two dates for the first domain, one for the second, none for the others, one unified date;
    checks: the first domain passed then failed, the second passed."""
    a, b = tables[0], tables[1]
    _publish(warehouse, a, date(2026, 3, 1), "2026-03-01 02:00:00+00", "scheduled__2026-03-01", 100)
    _publish(warehouse, a, date(2026, 3, 2), "2026-03-02 02:10:00+00", "scheduled__2026-03-02", 101)
    # a backfill republished an older date after the newest: still the newest date is reported
    _publish(warehouse, b, date(2026, 3, 2), "2026-03-02 02:20:00+00", f"manual__{XSS}", 7)
    _publish(warehouse, b, date(2026, 2, 27), "2026-03-05 09:00:00+00", "backfill__2026-02-27", 6)
    _publish(warehouse, UNIFIED, date(2026, 3, 2), "2026-03-02 02:30:00+00", "unified_run", 4321)
    _validate(warehouse, a, date(2026, 3, 2), "scheduled__2026-03-02", "2026-03-02 02:05:00+00", True, 6)
    _validate(warehouse, a, date(2026, 3, 3), "scheduled__2026-03-03", "2026-03-03 02:05:00+00", False, 6,
              FAILURES)
    _validate(warehouse, b, date(2026, 3, 2), f"manual__{XSS}", "2026-03-02 02:15:00+00", True, 5)
    return warehouse


def _by_table(status):
    return {t["table"]: t for t in status["tables"]}


def test_status_json_has_the_latest_publication_and_check_per_table(history, client, tables):
    r = client.get("/api/status")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    status = r.json()
    assert status["warehouse"] == {"reachable": True, "error": None, "validation_log_exists": True}
    assert status["registry_error"] is None
    by_table = _by_table(status)
    assert list(by_table) == [*tables, UNIFIED]
    a, b, *rest = tables
    assert by_table[a]["published"] == {
        "metric_date": "2026-03-02", "published_at": "2026-03-02T02:10:00+00:00",
        "run_id": "scheduled__2026-03-02", "row_count": 101, "dates_published": 2}
    assert by_table[a]["check"] == {
        "metric_date": "2026-03-03", "run_id": "scheduled__2026-03-03",
        "validated_at": "2026-03-03T02:05:00+00:00", "success": False, "evaluated": 6,
        "failures": FAILURES}
    assert by_table[b]["published"] == {
        "metric_date": "2026-03-02", "published_at": "2026-03-02T02:20:00+00:00",
        "run_id": f"manual__{XSS}", "row_count": 7, "dates_published": 2}
    assert by_table[b]["check"]["success"] is True and by_table[b]["check"]["failures"] == []
    for t in rest:
        assert by_table[t]["published"] is None and by_table[t]["check"] is None
    assert by_table[UNIFIED]["published"]["row_count"] == 4321
    assert by_table[UNIFIED]["domain"] is None and by_table[UNIFIED]["check"] is None
    # the catalog is the registry's, metric for metric
    registry = load_registry()
    assert [d["domain"] for d in status["catalog"]] == list(registry)
    for d in status["catalog"]:
        domain = registry[d["domain"]]
        assert [m["name"] for m in d["metrics"]] == [m.name for m in domain.metrics]
        placeholders = {m["name"]: m["requires"] for m in d["metrics"] if m["status"] == "placeholder"}
        assert placeholders == {m.name: m.requires for m in domain.placeholders}


def test_page_shows_them_and_escapes_every_value(history, client, tables):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for text in ("2026-03-02 02:10:00 UTC", "scheduled__2026-03-02", ">101<", ">7<", ">4321<",
                 "failed 2 of 6 checks", "expect_column_values_to_not_be_null", "health_score",
                 "3 unexpected of 120", "passed all 5 checks", "no checks recorded", "nothing published yet",
                 f"entity.{UNIFIED}", 'href="api/status"'):
        assert text in page, text
    assert "<script" not in page
    assert "manual__&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "observed 0 &lt;script&gt;" in page
    assert "could not be reached" not in page
    for domain in load_registry().values():
        assert f"entity.{domain.table}" in page
        for m in domain.metrics:
            assert f"<code>{m.name}</code>" in page
        for m in domain.placeholders:
            assert f"requires {html.escape(m.requires)}" in page


def test_without_validation_log_the_page_says_no_checks_recorded(warehouse, client, tables):
    warehouse.execute("drop table metrics_ops.validation_log")
    _publish(warehouse, tables[0], date(2026, 3, 2), "2026-03-02 02:10:00+00", "run_a", 11)
    status = client.get("/api/status").json()
    assert status["warehouse"] == {"reachable": True, "error": None, "validation_log_exists": False}
    assert _by_table(status)[tables[0]]["published"]["row_count"] == 11
    page = client.get("/").text
    assert page.count("no checks recorded") == len(tables) + 1


def test_an_unmigrated_warehouse_shows_nothing_published(conn, client, tables):
    status = client.get("/api/status").json()
    assert status["warehouse"]["reachable"] is True
    assert all(t["published"] is None and t["check"] is None for t in status["tables"])
    assert "nothing published yet" in client.get("/").text


def _point_connection_at(monkeypatch, **changes):
    conn = json.loads(os.environ["AIRFLOW_CONN_METRICS_WAREHOUSE"])
    monkeypatch.setenv("AIRFLOW_CONN_METRICS_WAREHOUSE", json.dumps({**conn, **changes}))


def test_an_unreachable_warehouse_still_renders_the_catalog(pg_server, monkeypatch, client):
    _point_connection_at(monkeypatch, schema="no_such_db")
    r = client.get("/")
    assert r.status_code == 200
    assert "The warehouse could not be reached" in r.text
    assert "no_such_db" in r.text and "does not exist" in r.text
    for domain in load_registry().values():
        assert all(f"<code>{m.name}</code>" in r.text for m in domain.metrics)
    status = client.get("/api/status").json()
    assert status["warehouse"]["reachable"] is False
    assert status["warehouse"]["error"].startswith("OperationalError: ")
    assert "\n" not in status["warehouse"]["error"]
    assert len(status["catalog"]) == len(load_registry())


def test_a_locked_table_times_out_instead_of_hanging(history, pg_server, ui, client, monkeypatch):
    monkeypatch.setattr(ui, "STATEMENT_TIMEOUT", "1s")
    locker = psycopg.connect(history.info.dsn)
    try:
        locker.execute("lock table metrics_ops.publish_log in access exclusive mode")
        started = time.monotonic()
        status = client.get("/api/status").json()
        assert time.monotonic() - started < 10
    finally:
        locker.rollback()
        locker.close()
    assert status["warehouse"]["error"] == "QueryCanceled: canceling statement due to statement timeout"


def test_a_silent_host_times_out_instead_of_hanging(ui, client, monkeypatch):
    monkeypatch.setattr(ui, "CONNECT_TIMEOUT_S", 2)  # libpq's minimum
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("AIRFLOW_CONN_METRICS_WAREHOUSE", json.dumps({
            "conn_type": "postgres", "host": "127.0.0.1", "port": silent.getsockname()[1],
            "login": "nobody", "schema": "metrics"}))
        started = time.monotonic()
        r = client.get("/")
        elapsed = time.monotonic() - started
    assert r.status_code == 200 and "could not be reached" in r.text
    assert "ConnectionTimeout: connection timeout expired" in r.text
    assert elapsed < 15


def test_airflow_loads_the_plugin_and_its_fastapi_app(pg_server):
    r = subprocess.run([sys.executable, "-m", "airflow", "plugins", "--output", "json"],
                       capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert r.returncode == 0, r.stderr
    plugins = json.loads(r.stdout)
    ours = [p for p in plugins if p["name"] == "metrics_layer"]
    assert len(ours) == 1, plugins
    plugin = ours[0]
    assert plugin["source"] == "$PLUGINS_FOLDER/metrics_layer_ui.py"
    assert plugin["fastapi_apps"] == [{"app": "fastapi.applications.FastAPI",
                                       "url_prefix": "/metrics-layer", "name": "metrics_layer_ui"}]
    [view] = plugin["external_views"]
    assert view["url_route"] == "metrics-layer" and view["destination"] == "nav"
    assert view["href"] == "metrics-layer/"  # relative to the UI's base URL: the app's prefix
    # plugins/ holds nothing else Airflow would import
    assert [p["name"] for p in plugins if p["source"].startswith("$PLUGINS_FOLDER/")] == ["metrics_layer"]
    assert sorted(p.name for p in (ROOT / "plugins").iterdir() if p.name != "__pycache__") == \
        ["metrics_layer_ui.py"]


API_SERVER_PROBE = """
import json
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

client = TestClient(create_app())
page, status = client.get("/metrics-layer/"), client.get("/metrics-layer/api/status")
print(json.dumps({"page": [page.status_code, page.text], "status": [status.status_code, status.json()]}))
"""


def test_airflows_api_server_serves_the_page_under_its_prefix(history, tables):
    r = subprocess.run([sys.executable, "-c", API_SERVER_PROBE], capture_output=True, text=True,
                       env=os.environ.copy(), timeout=180)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["page"][0] == 200 and "scheduled__2026-03-02" in out["page"][1]
    assert out["status"][0] == 200
    assert _by_table(out["status"][1])[tables[0]]["published"]["row_count"] == 101


def test_the_plugin_module_imports_light():
    code = ("import runpy, sys; runpy.run_path(sys.argv[1]); "
            "print(sorted(m for m in ('great_expectations', 'pandas', 'metrics_layer', 'psycopg', "
            "'airflow.providers.postgres.hooks.postgres') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(PLUGIN_FILE)], capture_output=True, text=True,
                       env=os.environ.copy(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
