"""A local Apache Superset for the bundle: `make superset` (on the demo warehouse) and
`make test-superset` (a fresh instance on a test warehouse).

Superset lives in its own virtualenv (.local/superset-venv, from requirements-superset.txt and
constraints-superset.txt: it shares nothing with Airflow's environment) and keeps its SQLite
metadata DB, data cache and secret key under a home directory (.local/superset by default).
This module runs in the project's own environment and drives Superset through its CLI and REST
API: set-up, gunicorn, bundle import.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from metrics_layer.paths import LOCAL_DIR, ROOT
from metrics_layer.superset_bundle import TEMPLATE_DIR

VENV = LOCAL_DIR / "superset-venv"
REQUIREMENTS = ROOT / "requirements-superset.txt"
CONSTRAINTS = ROOT / "constraints-superset.txt"
STAMP = VENV / ".installed"
DEFAULT_HOME = LOCAL_DIR / "superset"
ADMIN = "admin"


def venv_bin(name: str) -> str:
    return str(VENV / "bin" / name)


def ensure_venv(python: str | None = None) -> float:
    """Install Superset into its own virtualenv unless the pinned set is already there; returns
    the seconds spent (0 when it was up to date)."""
    wanted = REQUIREMENTS.read_text() + CONSTRAINTS.read_text()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return 0.0
    started = time.monotonic()
    python = python or shutil.which("python3.11") or sys.executable
    subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    subprocess.run([venv_bin("pip"), "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS), "-c", str(CONSTRAINTS)], check=True)
    STAMP.write_text(wanted)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Superset:
    """One Superset instance: its home directory (metadata, cache, secret, logs) and port."""

    home: Path = DEFAULT_HOME
    port: int = 8088
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        # TZ=UTC: Superset resolves "today" in relative date ranges in its own time zone, and
        # metric dates are UTC days (west of UTC, "tomorrow" would still be today in UTC)
        return {**os.environ, "SUPERSET_HOME": str(self.home), "FLASK_APP": "superset", "TZ": "UTC",
                "SUPERSET_CONFIG_PATH": str(TEMPLATE_DIR / "superset_config.py"),
                "PYTHONWARNINGS": "ignore"}

    @property
    def admin_password(self) -> str:
        """SUPERSET_ADMIN_PASSWORD, or one generated on first use and kept in the home
        directory (never in the repo)."""
        if os.environ.get("SUPERSET_ADMIN_PASSWORD"):
            return os.environ["SUPERSET_ADMIN_PASSWORD"]
        path = self.home / "admin_password"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(12))
            path.chmod(0o600)
        return path.read_text().strip()

    def cli(self, *args: str) -> None:
        with open(self.home / "superset-cli.log", "a") as out:
            subprocess.run([venv_bin("superset"), *args], env=self.env, check=True,
                           stdout=out, stderr=subprocess.STDOUT)

    def set_up(self) -> float:
        """Metadata DB, roles and the admin user (each step idempotent; about 25 s), once per
        home and Superset version. Returns the seconds spent."""
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        marker = self.home / ".set-up"
        done = hashlib.sha256(f"{REQUIREMENTS.read_text()}{CONSTRAINTS.read_text()}"
                              f"{self.admin_password}".encode()).hexdigest()
        if marker.exists() and marker.read_text() == done:
            return 0.0
        self.cli("db", "upgrade")
        password = self.admin_password
        users = subprocess.run([venv_bin("superset"), "fab", "list-users"], env=self.env,
                               capture_output=True, text=True, check=True).stdout
        if f"username:{ADMIN} |" not in users:
            self.cli("fab", "create-admin", "--username", ADMIN, "--firstname", "Metrics",
                     "--lastname", "Admin", "--email", "admin@example.com", "--password", password)
        else:
            self.cli("fab", "reset-password", "--username", ADMIN, "--password", password)
        self.cli("init")
        marker.write_text(done)
        return time.monotonic() - started

    def start(self, workers: int = 4, timeout: float = 90) -> float:
        """gunicorn in the background, `workers` processes of one thread each; returns once
        /health answers. Returns the seconds it took. One thread a process: with 4 threads a process,
        a dashboard's charts loaded at once failed once in CI with "Expected '(', found ')'"
        (the executive dashboard's Active Customers; the run before passed). The likely cause is
        Superset parsing each chart's time range ("Last 30 days : tomorrow") with pyparsing,
        whose packrat cache the threads of a process share; processes share nothing."""
        started = time.monotonic()
        log_path = self.home / "gunicorn.log"
        self.process = subprocess.Popen(
            [venv_bin("gunicorn"), "-w", str(workers), "-k", "gthread", "--threads", "1",
             "-b", f"127.0.0.1:{self.port}", "--timeout", "120", "--graceful-timeout", "5",
             "superset.app:create_app()"],
            env=self.env, stdout=open(log_path, "a"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True)
        import requests

        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {log_path}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).text == "OK":
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Superset did not answer on {self.url}/health within {timeout}s; see {log_path}")

    def stop(self) -> None:
        """Stop the gunicorn this object started (its own process group, nothing else)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def session(self):
        """A requests session logged in as the admin (JWT plus the CSRF token)."""
        import requests

        s = requests.Session()
        r = s.post(f"{self.url}/api/v1/security/login", json={
            "username": ADMIN, "password": self.admin_password, "provider": "db", "refresh": True},
            timeout=30)
        r.raise_for_status()
        s.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        s.headers["X-CSRFToken"] = s.get(f"{self.url}/api/v1/security/csrf_token/", timeout=30).json()["result"]
        s.headers["Referer"] = self.url
        return s

    def import_bundle(self, bundle: Path, session=None) -> float:
        """POST the bundle to /api/v1/assets/import/: overwrites the database, datasets, charts
        and dashboards by UUID. Returns the seconds it took."""
        started = time.monotonic()
        s = session or self.session()
        with open(bundle, "rb") as f:
            r = s.post(f"{self.url}/api/v1/assets/import/",
                       files={"bundle": (bundle.name, f, "application/zip")}, timeout=300)
        if r.status_code != 200:
            raise RuntimeError(f"bundle import failed ({r.status_code}): {r.text[:2000]}")
        return time.monotonic() - started

    def warm_up(self, tables: list[str], session=None) -> dict[str, list[dict]]:
        """What a deployment runs after each publication (README, "Superset"): re-run every
        chart of each dataset into the cache. Returns the per-chart results."""
        from metrics_layer.superset_bundle import DATABASE_NAME

        s = session or self.session()
        out = {}
        for table in tables:
            r = s.put(f"{self.url}/api/v1/dataset/warm_up_cache",
                      json={"db_name": DATABASE_NAME, "table_name": table}, timeout=300)
            r.raise_for_status()
            out[table] = r.json()["result"]
        return out


def warehouse_uri() -> str:
    """SUPERSET_WAREHOUSE_URI, or the embedded warehouse's `metrics` database (started if need be)."""
    from metrics_layer import local
    from metrics_layer.superset_bundle import URI_ENV, embedded_uri

    if os.environ.get(URI_ENV):
        return os.environ[URI_ENV]
    if not local.EMBEDDED:
        raise SystemExit(f"{local.WAREHOUSE_ENV} points at your own warehouse: set {URI_ENV} to its "
                         "read-only role, e.g. postgresql+psycopg2://metrics_reader@host:5432/db "
                         "(password in METRICS_READER_PASSWORD)")
    local.ensure_warehouse()
    return embedded_uri(local.DEFAULT_DB)


def latest_overview_date(uri: str):
    """The latest metric_date of the company overview, read as the BI role (None when empty)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    with psycopg.connect(host=url.query.get("host") or url.host, port=url.port, dbname=url.database,
                         user=url.username, password=os.environ.get("METRICS_READER_PASSWORD"),
                         connect_timeout=10) as conn:
        return conn.execute("select max(metric_date) from entity.metrics_company_overview").fetchone()[0]


def serve(port: int = 8088) -> None:
    """`make superset`: the bundle on a local Superset over the demo warehouse, until Ctrl-C."""
    import psycopg

    from metrics_layer.superset_bundle import write_bundle

    uri = warehouse_uri()
    try:
        latest = latest_overview_date(uri)
    except psycopg.Error as e:
        raise SystemExit(f"cannot read the warehouse as the BI role ({e}); run `make demo` first") from e
    if latest is None:
        raise SystemExit("the warehouse has no published day yet: run `make demo` first")
    spent = ensure_venv()
    if spent:
        print(f"installed Superset into {VENV} in {spent:.0f}s")
    bundle = write_bundle(uri)
    print(f"bundle: {bundle} (datasets, charts and dashboards from include/registry and include/superset)")
    inst = Superset(DEFAULT_HOME, port)
    # Ctrl-C (even when started from a shell that ignores it) and a plain kill both stop gunicorn,
    # which runs in its own session: never leave it behind
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"setting up Superset under {inst.home} (SQLite metadata) ...", flush=True)
    try:
        inst.set_up()
        inst.start()
        inst.import_bundle(bundle)
        print(f"\nSuperset is up on the warehouse's latest day {latest}: {inst.url}/dashboard/list/")
        print(f"  login: {ADMIN} / {inst.admin_password}")
        for slug in ("executive", "customer-success", "sales", "product"):
            print(f"  {inst.url}/superset/dashboard/{slug}/")
        print(f"logs: {inst.home / 'gunicorn.log'}; Ctrl-C stops it", flush=True)
        inst.process.wait()
    except KeyboardInterrupt:
        print("stopping Superset")
    finally:
        inst.stop()
