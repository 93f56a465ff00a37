"""Test environment: a real PostgreSQL (the embedded server the project starts itself, in its own
database `metrics_test`), a real Airflow metadata DB (SQLite under .local/test) and real DAG runs.

The environment is set before anything imports Airflow. Tests never touch a warehouse named by
the caller's AIRFLOW_CONN_METRICS_WAREHOUSE: they always use the embedded test database.
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

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
    """A real local HTTP server standing in for Slack: incoming webhooks (any path) and the Web
    API (paths under /api/, answered with Slack's JSON). `answers` scripts the next responses,
    in order, as (status, headers, delay_seconds), e.g. (429, {"Retry-After": "1"}, 0), (500,
    {}, 0) or (200, {}, 10) to sleep past the client's timeout; then every request gets 200.
    `attempts` records every request, `posts` those answered 2xx without a delay."""

    def __init__(self):
        self.posts: list[dict] = []
        self.attempts: list[dict] = []
        self.answers: list[tuple[int, dict, float]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                with receiver.lock:
                    status, headers, delay = (receiver.answers.pop(0) if receiver.answers
                                              else (200, {}, 0))
                    record = {"path": self.path, "body": body, "at": time.monotonic(),
                              "status": status, "authorization": self.headers.get("Authorization")}
                    receiver.attempts.append(record)
                if delay:  # meant to outlast the client's timeout: never counted as a post
                    time.sleep(delay)
                elif 200 <= status < 300:
                    with receiver.lock:  # before answering: the client may check at once
                        receiver.posts.append(record)
                web_api = self.path.startswith("/api/")
                payload = (json.dumps({"ok": True, "channel": body.get("channel"), "ts": "1.0"}).encode()
                           if web_api and status < 300 else b"ok" if status < 300 else b"error")
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json" if web_api else "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timeout)
                    return

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that timed out and left: expected in the timeout tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def texts(self) -> list[str]:
        return [p["body"].get("text", "") for p in self.posts]

    def webhook_connection(self, password: str = "T000/B000/XXX") -> str:
        """An Airflow `slackwebhook` connection (JSON) whose webhook is this server."""
        return json.dumps({"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{self.port}/services",
                           "password": password})

    def web_api_connection(self, token: str) -> str:
        """An Airflow `slack` (Web API) connection (JSON) whose API base URL is this server."""
        return json.dumps({"conn_type": "slack", "password": token,
                           "extra": {"base_url": f"http://127.0.0.1:{self.port}/api/"}})


@pytest.fixture
def slack():
    r = SlackReceiver()
    r.thread.start()
    os.environ["AIRFLOW_CONN_SLACK_ALERTS"] = r.webhook_connection()
    yield r
    os.environ.pop("AIRFLOW_CONN_SLACK_ALERTS", None)
    r.server.shutdown()
    r.server.server_close()
