"""Harness: the project's DAGs under a REAL Airflow 3 deployment on this machine.

One session starts, in this order (all session-scoped, everything torn down even on failure):
- databases `metrics_sched` (warehouse) and `airflow_sched` (Airflow metadata) in the embedded
  PostgreSQL 18 the other tests use (`metrics_layer.local.embedded_server()`; the server itself is
  shared and kept running, as `make demo` and `make test` keep it; only our databases are new);
- the warehouse seeded with the same synthetic data tests/test_end_to_end.py uses;
- a local HTTP server standing in for Slack (the `slack_alerts` connection points at it);
- `airflow db migrate`, then `airflow api-server`, `scheduler` (LocalExecutor), `dag-processor` and
  `triggerer` as subprocesses, each in its own process group, logging to
  .local/test/scheduler/logs/<name>.log;
- DAGs are created unpaused, so each daily domain DAG immediately gets its scheduled run for
  today (catchup=False) and the fan-in runs after them; the session waits for that to settle.

Tests drive Airflow the way an operator does: the `airflow` CLI (`dags trigger`, `backfill create`)
and the REST API (`/api/v2`, bearer token from `POST /auth/token`), and check the warehouse.

This directory is separate from tests/ on purpose: tests/conftest.py points AIRFLOW_HOME at a SQLite
metadata DB when it is imported. Nothing here imports Airflow in the pytest process.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from metrics_layer import local, seed

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".local" / "test" / "scheduler"
WAREHOUSE_DB = "metrics_sched"
AIRFLOW_DB = "airflow_sched"
DOMAIN_DAGS = ("metrics_customer_success", "metrics_sales", "metrics_product_analytics",
               "metrics_marketing")
UNIFIED_DAG = "metrics_unified"
ALL_DAGS = (*DOMAIN_DAGS, UNIFIED_DAG)
# the UTC day the session runs in (the seed's end date; "today" for a run with no logical date)
TODAY = datetime.now(UTC).date()
TERMINAL = ("success", "failed")
ACTIVE = ("queued", "running")
API_USER = "admin"

STARTUP_TIMEOUT = 150  # migrate + four processes + first parse + the scheduled runs at unpause
RUN_TIMEOUT = 180      # one wait_for_runs call

# filled by the session fixture's teardown, printed by pytest_terminal_summary
TIMINGS: list[dict] = []


# ---------------------------------------------------------------------------- Slack stand-in

class SlackReceiver:
    """A real local HTTP server standing in for Slack's incoming-webhook endpoint."""

    def __init__(self):
        self.posts: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.posts.append({"path": self.path, "body": json.loads(body or b"{}"),
                                           "at": time.time()})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def connection_json(self) -> str:
        return json.dumps({"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{self.port}/services",
                           "password": "T000/B000/XXX"})

    def texts_since(self, index: int) -> list[str]:
        with self.lock:
            return [p["body"].get("text", "") for p in self.posts[index:]]

    def __len__(self) -> int:
        with self.lock:
            return len(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------- Airflow deployment

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _iso(d: date | datetime) -> str:
    if isinstance(d, datetime):
        return d.astimezone(UTC).isoformat()
    return f"{d.isoformat()}T00:00:00+00:00"


def parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class Airflow:
    """The running deployment: its processes, its CLI, its REST API, waiting and diagnostics."""

    def __init__(self, home: Path, env: dict[str, str], port: int, password: str):
        self.home = home
        self.env = env
        self.port = port
        self.password = password
        self.base_url = f"http://127.0.0.1:{port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.proc_logs: dict[str, Path] = {}
        self.http = httpx.Client(base_url=self.base_url, timeout=30)
        self._token: str | None = None

    # -- processes
    def start(self, name: str, *args: str) -> None:
        log_path = self.home / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args], env=self.env, cwd=self.home,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)  # own session and process group
        self.proc_logs[name] = log_path
        with (self.home / "pids").open("a") as pids:
            pids.write(f"{self.procs[name].pid}\n")

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise AssertionError(f"airflow {name} exited with {p.returncode}\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 12, width: int = 300) -> str:
        path = self.proc_logs.get(name)
        if not path or not path.exists():
            return f"(no log for {name})"
        text = [line[:width] for line in path.read_text(errors="replace").splitlines()[-lines:]]
        return f"---- tail of {path}\n" + "\n".join(text)

    def tails(self, lines: int = 12) -> str:
        return "\n".join(self.tail(n, lines) for n in self.procs)

    def stop(self) -> None:
        """SIGTERM every process group we started, then SIGKILL whatever is left of them and of
        their descendants (task processes run in process groups of their own)."""
        descendants: dict[int, psutil.Process] = {}
        for p in self.procs.values():
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(p.pid).children(recursive=True):
                    descendants[c.pid] = c
        # orphans re-parented to us (we are a child subreaper, see the fixture); never the
        # shared embedded PostgreSQL (pg_ctl daemonizes it before we become a subreaper anyway)
        with contextlib.suppress(psutil.Error):
            for c in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "postgres" not in c.name():
                        descendants[c.pid] = c
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        for c in descendants.values():
            with contextlib.suppress(psutil.Error):
                c.terminate()
        deadline = time.monotonic() + 15
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
        _, alive = psutil.wait_procs(list(descendants.values()),
                                     timeout=max(0.1, deadline - time.monotonic()))
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for c in alive:
            with contextlib.suppress(psutil.Error):
                c.kill()
        psutil.wait_procs(alive, timeout=5)
        # reap anything re-parented to us that already exited
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        self.http.close()

    # -- CLI
    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, cwd=self.home,
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"`airflow {' '.join(args)}` exited {r.returncode}\n"
                                 f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
        return r

    def cli_parallel(self, commands: Iterable[tuple[str, ...]], timeout: float = 120) -> list[str]:
        """Several CLI commands at once (each `airflow` start-up costs a few CPU seconds)."""
        procs = [(cmd, subprocess.Popen([sys.executable, "-m", "airflow", *cmd], env=self.env,
                                        cwd=self.home, stdin=subprocess.DEVNULL, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
                 for cmd in commands]
        outputs = []
        for cmd, p in procs:
            out, _ = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise AssertionError(f"`airflow {' '.join(cmd)}` exited {p.returncode}\n{out[-3000:]}")
            outputs.append(out)
        return outputs

    # -- REST API
    def token(self) -> str:
        """SimpleAuthManager (Airflow's default): POST /auth/token with a configured user."""
        if self._token is None:
            r = self.http.post("/auth/token", json={"username": API_USER, "password": self.password})
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs):
        r = self.http.request(method, f"/api/v2{path}",
                              headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)
        if r.status_code >= 400:
            raise AssertionError(f"{method} /api/v2{path} -> {r.status_code}: {r.text[:2000]}")
        return r.json() if r.content else None

    def dag_runs(self, dag_id: str = "~", **params) -> list[dict]:
        runs: list[dict] = []
        while True:
            page = self.api("GET", f"/dags/{dag_id}/dagRuns",
                            params={"limit": 100, "offset": len(runs), "order_by": "id", **params})
            runs += page["dag_runs"]
            if not page["dag_runs"] or len(runs) >= page["total_entries"]:
                return runs

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                        params={"limit": 100})["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def trigger(self, dag_id: str, logical_date: date | datetime | None, conf: dict | None = None) -> dict:
        """POST /api/v2/dags/{dag_id}/dagRuns, as the UI's trigger button does."""
        body = {"logical_date": _iso(logical_date) if logical_date is not None else None,
                "conf": conf or {}}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def runs_at(self, dag_id: str, logical_date: date | datetime) -> list[dict]:
        iso = _iso(logical_date)
        return self.dag_runs(dag_id, logical_date_gte=iso, logical_date_lte=iso)

    def fail_runs(self, runs: Iterable[dict]) -> None:
        """Mark still-active runs failed (so the next test starts from a quiet scheduler)."""
        for r in runs:
            with contextlib.suppress(AssertionError):
                if self.dag_run(r["dag_id"], r["dag_run_id"])["state"] in ACTIVE:
                    self.api("PATCH", f"/dags/{r['dag_id']}/dagRuns/{r['dag_run_id']}",
                             json={"state": "failed"})

    # -- logs
    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = (self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
                / f"attempt={try_number}.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def task_errors(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The warning/error lines of a task log (JSON lines), with exception type and message."""
        out = []
        for line in self.task_log(dag_id, run_id, task_id, try_number).splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("level") not in ("warning", "error", "critical"):
                continue
            excs = [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in rec.get("error_detail") or []]
            out.append(f"  [{rec['level']}] {rec.get('event')}" + "".join(f"\n    {x}" for x in excs))
        return "\n".join(out) or "  (no warning or error in the task log)"

    def diagnostics(self, runs: Iterable[dict]) -> str:
        out = []
        for r in runs:
            dag_id, run_id = r["dag_id"], r["dag_run_id"]
            try:
                state = self.dag_run(dag_id, run_id)["state"]
                tis = self.task_instances(dag_id, run_id)
            except AssertionError as exc:
                out.append(f"{dag_id} {run_id}: {exc}")
                continue
            out.append(f"{dag_id} {run_id} (logical date {r.get('logical_date')}): {state}; tasks: "
                       + ", ".join(f"{ti['task_id']}={ti['state']}(try {ti['try_number']})" for ti in tis))
            for ti in tis:
                if ti["state"] in ("failed", "up_for_retry") and ti["try_number"]:
                    out.append(f"---- {ti['task_id']} try {ti['try_number']}:\n"
                               + self.task_errors(dag_id, run_id, ti["task_id"], ti["try_number"]))
        return "\n".join(out) + "\n" + self.tails()

    # -- waiting
    def wait_for_runs(self, runs: list[dict], *, timeout: float = RUN_TIMEOUT,
                      expect: str | None = "success") -> list[dict]:
        """Wait until every run is terminal; then (with `expect`) assert they all ended so.
        A task going up_for_retry fails the wait at once: no test expects a retry (the retry
        delay is 5 minutes), and the run is marked failed so later tests start quiet."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            current = [self.dag_run(r["dag_id"], r["dag_run_id"]) for r in runs]
            if all(r["state"] in TERMINAL for r in current):
                break
            retrying = [r for r in current if r["state"] in ACTIVE
                        and "up_for_retry" in self.task_states(r["dag_id"], r["dag_run_id"]).values()]
            if retrying or time.monotonic() > deadline:
                why = "a task went up_for_retry" if retrying else f"not finished after {timeout:.0f}s"
                diag = self.diagnostics(current)
                self.fail_runs(current)
                raise AssertionError(f"{why}:\n{diag}")
            time.sleep(1)
        if expect is not None:
            bad = [r for r in current if r["state"] != expect]
            assert not bad, f"expected every run to end {expect}:\n{self.diagnostics(bad)}"
        return current

    def settle(self, timeout: float = RUN_TIMEOUT, quiet_for: float = 3) -> None:
        """Wait until no run is queued or running anywhere and none ended in the last `quiet_for`
        seconds (an Asset-triggered run is created in the scheduler loop that sees its producer
        finish, so a fan-in run follows within a loop or two)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            active = [r for s in ACTIVE for r in self.dag_runs("~", state=s)]
            if not active:
                recent = _iso(datetime.now(UTC) - timedelta(seconds=quiet_for))
                if not self.api("GET", "/dags/~/dagRuns", params={"limit": 1, "end_date_gte": recent}
                                )["dag_runs"]:
                    return
            elif time.monotonic() > deadline:
                diag = self.diagnostics(active)
                self.fail_runs(active)
                raise AssertionError(f"runs still active after {timeout:.0f}s:\n{diag}")
            time.sleep(1)

    def new_runs(self, dag_id: str, before: Iterable[dict]) -> list[dict]:
        seen = {r["dag_run_id"] for r in before}
        return [r for r in self.dag_runs(dag_id) if r["dag_run_id"] not in seen]

    def wait_until(self, what: str, predicate, timeout: float = 60, interval: float = 1):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.tails()}")
            time.sleep(interval)


def _kill_leftovers(home: Path) -> None:
    """Processes of an earlier session that was killed before its teardown (the pids it
    recorded), if they still run in this AIRFLOW_HOME (their working directory: `airflow`
    processes rename themselves, which clobbers /proc/<pid>/environ)."""
    pids = home / "pids"
    if not pids.exists():
        return
    for line in pids.read_text().split():
        with contextlib.suppress(psutil.Error, ValueError):
            p = psutil.Process(int(line))
            if p.cwd() == str(home):
                procs = [p, *p.children(recursive=True)]
                for q in procs:
                    q.kill()
                psutil.wait_procs(procs, timeout=5)


def _become_subreaper() -> None:
    """Orphaned task processes get re-parented to this process, so teardown can find them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _recreate_db(server, name: str) -> None:
    with psycopg.connect(host=local.socket_dir(server), user="postgres", dbname="postgres",
                         autocommit=True) as c:
        c.execute(f'drop database if exists "{name}" with (force)')
        c.execute(f'create database "{name}"')


def airflow_env(server, slack: SlackReceiver, port: int, password_file: Path) -> dict[str, str]:
    # nothing Airflow-related leaks in from the caller (the Makefile exports its own AIRFLOW_HOME)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "METRICS_")) and k != "PYTHONPATH"}
    env.update({
        "AIRFLOW_HOME": str(HOME),
        "PYTHONPATH": str(ROOT / "src"),   # the package next to this directory
        "METRICS_LAYER_HOME": str(ROOT),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            f"postgresql+psycopg2://postgres@/{AIRFLOW_DB}?host={local.socket_dir(server)}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "5",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",
        # every process signs and checks task/API tokens with the same secret
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        # SimpleAuthManager (the default): user admin, password from a file we write first; the
        # API wants `Authorization: Bearer <token>` from POST /auth/token. (SIMPLE_AUTH_MANAGER_
        # ALL_ADMINS=True would switch authentication off: every request is admin, token or not.)
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{API_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        # parse once at start; the files do not change during the session
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # a short idle sleep: the next task is queued soon after the previous one ends
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW_CONN_METRICS_WAREHOUSE": local.connection_json(server, WAREHOUSE_DB),
        "AIRFLOW_CONN_SLACK_ALERTS": slack.connection_json(),
    })
    return env


@pytest.fixture(scope="session")
def pg_server():
    server = local.embedded_server()
    local.ensure_database(server, WAREHOUSE_DB, recreate=True)
    _recreate_db(server, AIRFLOW_DB)
    return server


def connect(server) -> psycopg.Connection:
    return psycopg.connect(host=local.socket_dir(server), user="postgres", dbname=WAREHOUSE_DB,
                           autocommit=True)


@pytest.fixture(scope="session")
def slack():
    r = SlackReceiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def warehouse(pg_server):
    """A connection to metrics_sched (autocommit)."""
    with connect(pg_server) as c:
        yield c


@pytest.fixture(scope="session")
def metadata_db(pg_server):
    """A connection to Airflow's metadata DB, for what the public REST API does not show."""
    with psycopg.connect(host=local.socket_dir(pg_server), user="postgres", dbname=AIRFLOW_DB,
                         autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def airflow(pg_server, slack, warehouse):
    _kill_leftovers(HOME)
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    password = secrets.token_urlsafe(16)
    password_file = HOME / "simple_auth_manager_passwords.json"
    password_file.write_text(json.dumps({API_USER: password}))
    port = _free_port()
    af = Airflow(HOME, airflow_env(pg_server, slack, port, password_file), port, password)

    _become_subreaper()
    previous_sigterm = signal.getsignal(signal.SIGTERM)

    def _on_sigterm(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    try:
        af.start("db-migrate", "db", "migrate")
        seed.seed(warehouse, scale=0.05, days=35, seed=7, end_date=TODAY)  # meanwhile
        migrate = af.procs.pop("db-migrate")
        assert migrate.wait(timeout=120) == 0, f"airflow db migrate failed\n{af.tail('db-migrate')}"
        af.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port))
        af.start("scheduler", "scheduler")
        af.start("dag-processor", "dag-processor")
        af.start("triggerer", "triggerer")

        def api_up():
            with contextlib.suppress(httpx.HTTPError):
                return af.http.get("/api/v2/monitor/health").status_code == 200
            return False

        af.wait_until("the api-server", api_up, timeout=STARTUP_TIMEOUT, interval=0.5)

        def serialized():
            errors = af.api("GET", "/importErrors")["import_errors"]
            if errors:
                raise AssertionError("DAG import errors:\n" + "\n".join(
                    f"{e['filename']}: {e['stack_trace']}" for e in errors))
            dags = {d["dag_id"]: d for d in af.api("GET", "/dags", params={"limit": 100})["dags"]}
            return dags if set(ALL_DAGS) <= set(dags) else None

        dags = af.wait_until("all DAGs serialized", serialized, timeout=STARTUP_TIMEOUT)
        for dag_id in ALL_DAGS:  # created unpaused (DAGS_ARE_PAUSED_AT_CREATION=False); make sure
            if dags[dag_id]["is_paused"]:
                af.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        # unpausing a daily catchup=False DAG creates its run for today at once; the fan-in follows
        af.wait_until("the scheduled runs at unpause",
                      lambda: all(af.dag_runs(d) for d in DOMAIN_DAGS), timeout=60)
        af.settle(timeout=STARTUP_TIMEOUT)
        af.startup_seconds = time.monotonic() - started
        print(f"\nAirflow deployment up and settled in {af.startup_seconds:.0f}s "
              f"(api-server on port {port}, AIRFLOW_HOME={HOME})")
        yield af
    finally:
        with contextlib.suppress(Exception):
            TIMINGS.extend(_timings(af))
        af.stop()
        signal.signal(signal.SIGTERM, previous_sigterm)


def _timings(af: Airflow) -> list[dict]:
    rows = []
    for dag_id in ALL_DAGS:
        for r in af.dag_runs(dag_id):
            queued, start, end = (parse_ts(r[k]) for k in ("queued_at", "start_date", "end_date"))
            rows.append({
                "dag_id": dag_id, "run_id": r["dag_run_id"], "run_type": r["run_type"],
                "logical_date": (r["logical_date"] or "")[:19], "state": r["state"],
                "queued_to_end": (end - queued).total_seconds() if end and queued else None,
                "start_to_end": (end - start).total_seconds() if end and start else None,
            })
    return rows


@pytest.fixture(autouse=True)
def quiet_scheduler(request):
    """Every test starts with no run queued or running anywhere."""
    if "airflow" in request.fixturenames:
        request.getfixturevalue("airflow").settle()
    yield


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS:
        return
    tr = terminalreporter
    tr.section("DAG run timings (queued_at -> end_date, i.e. trigger to finish; start -> end)")
    for t in sorted(TIMINGS, key=lambda t: (t["dag_id"], t["run_id"])):
        q = f"{t['queued_to_end']:6.1f}s" if t["queued_to_end"] is not None else "     -"
        s = f"{t['start_to_end']:6.1f}s" if t["start_to_end"] is not None else "     -"
        tr.write_line(f"{t['dag_id']:27} {t['run_type']:15} {t['logical_date'] or '(none)':19} "
                      f"{t['state']:8} {q} {s}  {t['run_id']}")
    for dag_id in ALL_DAGS:
        xs = [t["queued_to_end"] for t in TIMINGS
              if t["dag_id"] == dag_id and t["state"] == "success" and t["queued_to_end"] is not None]
        if xs:
            tr.write_line(f"{dag_id}: {len(xs)} successful runs, trigger-to-success "
                          f"min {min(xs):.1f}s, median {sorted(xs)[len(xs) // 2]:.1f}s, max {max(xs):.1f}s")


def days_ago(n: int) -> date:
    return TODAY - timedelta(days=n)
