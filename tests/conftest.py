"""Test environment: a real PostgreSQL (the embedded server the project starts itself, in its own
database `metrics_test`), a real Airflow metadata DB (SQLite under .local/test) and real DAG runs.

The environment is set before anything imports Airflow. Tests never touch a warehouse named by
the caller's AIRFLOW_CONN_METRICS_WAREHOUSE: they always use the embedded test database.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# METRICS_TEST_DB lets two test sessions run side by side (each its own database and Airflow home)
TEST_DB = os.environ.get("METRICS_TEST_DB", "metrics_test")
# METRICS_TEST_PG_VERSION=16 runs the suite on the wheel's PostgreSQL 16 instead of 18
PG_VERSION = int(os.environ.get("METRICS_TEST_PG_VERSION", "18"))
TEST_HOME = ROOT / ".local" / "test" / f"{TEST_DB}-pg{PG_VERSION}"
(TEST_HOME / "airflow").mkdir(parents=True, exist_ok=True)
os.environ.update({
    "AIRFLOW_HOME": str(TEST_HOME / "airflow"),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{TEST_HOME / 'airflow' / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
})
os.environ.pop("AIRFLOW_CONN_SLACK_ALERTS", None)

import psycopg  # noqa: E402
import pytest  # noqa: E402

from metrics_layer import local  # noqa: E402

LAYER_SCHEMAS = ("raw", "entity", "metrics_staging", "metrics_state", "metrics_ops")


@pytest.fixture(scope="session")
def pg_server():
    server = local.embedded_server(version=PG_VERSION)
    local.ensure_database(server, TEST_DB, recreate=True)
    with _connect(server) as c:
        assert c.info.server_version // 10000 == PG_VERSION
    os.environ[local.WAREHOUSE_ENV] = local.connection_json(server, TEST_DB)
    local.ensure_airflow_db()
    return server


def _connect(server) -> psycopg.Connection:
    return psycopg.connect(host=local.socket_dir(server), user="postgres", dbname=TEST_DB,
                           autocommit=True)


@pytest.fixture
def conn(pg_server):
    """A connection to a warehouse with no layer or source schemas: each test builds its own."""
    c = _connect(pg_server)
    for schema in LAYER_SCHEMAS:
        c.execute(f"drop schema if exists {schema} cascade")
    yield c
    c.close()


@pytest.fixture(scope="session")
def dagbag(pg_server):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


class SlackReceiver:
    """A real local HTTP server standing in for Slack's webhook endpoint."""

    def __init__(self):
        self.posts: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append({"path": self.path, "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def texts(self) -> list[str]:
        return [p["body"].get("text", "") for p in self.posts]


@pytest.fixture
def slack():
    r = SlackReceiver()
    r.thread.start()
    os.environ["AIRFLOW_CONN_SLACK_ALERTS"] = json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{r.port}/services",
        "password": "T000/B000/XXX"})
    yield r
    os.environ.pop("AIRFLOW_CONN_SLACK_ALERTS", None)
    r.server.shutdown()
