"""Nothing lost: a worker killed with SIGKILL in the middle of a build or of a publish, or a
PostgreSQL restart during a build, never changes what readers see (the last good day), leaves no
advisory lock and no session behind, and a rerun (the same run id, as Airflow's retry would do,
and a fresh one) converges to exactly the rows of an uninterrupted run.

To tell "unchanged" from "converged", the sources change after the good day is published (a
customer renamed, an MRR raised): the expected rows are built first by an uninterrupted build of
the changed sources into a staging slice of their own, and differ from the good day's.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from conftest import TEST_DB
from helpers import table_dump
from metrics_layer import local, pipeline, seed
from metrics_layer.errors import is_transient
from metrics_layer.registry import load_registry
from scratch_server import scratch_server

CS = load_registry()["customer_success"]
TABLE = f"entity.{CS.table}"
STAGING = f"metrics_staging.{CS.table}"
COLUMNS = ", ".join(CS.table_columns)
# metric_date D is a UTC day; the good day, the fault and the reruns are all for D
D = datetime.now(UTC).date()
STEP_SCRIPT = Path(__file__).with_name("fault_step.py")
# the build reads it, stage's state refresh does not: a lock on it stops the build mid-transaction
BLOCKING_SOURCE = "raw.customers"

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- helpers

def _connect(host: str, dbname: str, *, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(host=host, user="postgres", dbname=dbname, autocommit=autocommit)


def day_rows(conn, table: str, stage_id: str | None = None) -> list[tuple]:
    """The rows of D in the domain's column order (entity, or one staging slice), sorted."""
    where, params = "metric_date = %s", [D]
    if stage_id is not None:
        where, params = where + " and stage_id = %s", [D, stage_id]
    return conn.execute(f"select row({COLUMNS})::text from {table} where {where} order by 1",
                        params).fetchall()


def publish_good_day(conn) -> list[tuple]:
    """Seeded sources, D published by run 'good'; returns what readers see (the whole table)."""
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=D)
    assert pipeline.refresh_domain(conn, CS, D, "good") > 0
    return table_dump(conn, TABLE)


def change_sources(conn, n: int) -> None:
    """Rename the n-th customer active on D and raise one of its live subscriptions' MRR."""
    customer_id = conn.execute(
        "select customer_id from raw.customers where created_at < %(d)s "
        "and (churned_at is null or churned_at >= %(d)s) order by customer_id offset %(n)s limit 1",
        {"d": D, "n": n}).fetchone()[0]
    conn.execute("update raw.customers set customer_name = customer_name || %s where customer_id = %s",
                 (f" (renamed {n})", customer_id))
    conn.execute(
        "update raw.subscriptions set mrr = mrr + 100 where subscription_id = ("
        "select min(subscription_id) from raw.subscriptions where customer_id = %(c)s "
        "and start_date <= %(d)s and (end_date is null or end_date > %(d)s))",
        {"c": customer_id, "d": D})


def uninterrupted_rows(conn, tag: str) -> list[tuple]:
    """What an uninterrupted run makes of the current sources: built into a slice of its own,
    read, and dropped again (entity is not touched)."""
    run_id = f"expected-{tag}"
    pipeline.build_staging(conn, CS, D, run_id)
    rows = day_rows(conn, STAGING, pipeline.stage_key(run_id))
    conn.execute(f"delete from {STAGING} where stage_id = %s", (pipeline.stage_key(run_id),))
    return rows


def start_step(step: str, run_id: str, output: Path) -> subprocess.Popen:
    """tests/fault_step.py in a process of its own (AIRFLOW_CONN_METRICS_WAREHOUSE inherited)."""
    return subprocess.Popen([sys.executable, str(STEP_SCRIPT), step, D.isoformat(), run_id],
                            stdout=output.open("w"), stderr=subprocess.STDOUT, env=os.environ.copy())


def wait_blocked(conn, query_part: str, alive, what: str, timeout: float = 40) -> int:
    """The backend pid of the layer's session waiting on a lock in `query_part`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "select pid from pg_stat_activity where datname = current_database() "
            "and application_name = 'metrics_layer' and wait_event_type = 'Lock' and query ilike %s",
            (f"%{query_part}%",)).fetchone()
        if row:
            return row[0]
        if not alive():
            pytest.fail(f"{what} ended before it blocked")
        time.sleep(0.1)
    pytest.fail(f"{what} did not block on a lock within {timeout}s")


def wait_backend_gone(conn, pid: int, timeout: float) -> float | None:
    """Seconds until backend `pid` left pg_stat_activity, or None if it is still there."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if conn.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchone() is None:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def advisory_locks(conn) -> int:
    """Advisory locks held in this database (other test sessions share the server)."""
    return conn.execute(
        "select count(*) from pg_locks where locktype = 'advisory' "
        "and database = (select oid from pg_database where datname = current_database())").fetchone()[0]


def kill_and_release(conn, proc: subprocess.Popen, backend: int, locker, what: str) -> float:
    """SIGKILL the step's process and keep the lock that blocks it: the server must notice the
    dead client by itself (the layer sets client_connection_check_interval = 5s on PG14+) and
    end its backend while it still waits, instead of running its statement on. Then release the
    lock and check that no advisory lock and no session of the killed process remain. Returns
    the seconds from the kill until the backend was gone."""
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    gone_after = wait_backend_gone(conn, backend, timeout=12)
    locker.rollback()
    if gone_after is None:
        later = wait_backend_gone(conn, backend, timeout=20)
        after = f"gone {later:.1f}s after the lock was released" if later else "still there"
        pytest.fail(f"{what}: backend {backend} outlived its killed client by 12s while blocked ({after})")
    deadline = time.monotonic() + 20
    while advisory_locks(conn) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert advisory_locks(conn) == 0
    log.warning("%s: backend %d gone %.1fs after SIGKILL", what, backend, gone_after)
    return gone_after


@pytest.fixture
def reader(pg_server):
    """A reader on a connection of its own (what a dashboard sees)."""
    c = _connect(local.socket_dir(pg_server), TEST_DB)
    yield c
    c.close()


@pytest.fixture
def locker(pg_server):
    """A connection in an open transaction, to hold the lock a step blocks on."""
    c = _connect(local.socket_dir(pg_server), TEST_DB, autocommit=False)
    yield c
    c.close()


# ---------------------------------------------------------------------------- tests

def test_sigkill_during_the_build_loses_nothing(conn, reader, locker, tmp_path):
    good = publish_good_day(conn)
    change_sources(conn, 0)
    expected = uninterrupted_rows(conn, "1")
    assert expected != day_rows(conn, TABLE)  # "converged" is distinguishable from "unchanged"

    # stage's schema and state steps are done; only the build runs in the process to be killed
    pipeline.ensure_schema(conn)
    pipeline.refresh_state(conn, "user_activity_daily", D)
    locker.execute(f"lock table {BLOCKING_SOURCE} in access exclusive mode")
    proc = start_step("build", "run-1", tmp_path / "build.log")
    try:
        backend = wait_blocked(reader, f"insert into {STAGING}", lambda: proc.poll() is None,
                               "the build")
        # mid-transaction: it already took the staging table for its slice
        assert reader.execute("select count(*) from pg_locks where pid = %s and relation = %s::regclass "
                              "and granted", (backend, STAGING)).fetchone()[0] == 1
        assert table_dump(reader, TABLE) == good
        kill_and_release(reader, proc, backend, locker, "SIGKILL during build")
    finally:
        if proc.poll() is None:
            proc.kill()

    # readers still see the last good day; the killed build left nothing staged
    assert table_dump(reader, TABLE) == good
    assert reader.execute(f"select count(*) from {STAGING}").fetchone()[0] == 0

    # Airflow's retry of the same run: build + publish converge to the uninterrupted rows
    assert pipeline.run(pipeline.build_staging, CS, D, "run-1") == len(expected)
    assert pipeline.run(pipeline.publish, CS, D, "run-1") == len(expected)
    assert day_rows(reader, TABLE) == expected
    assert reader.execute(f"select count(*) from {STAGING}").fetchone()[0] == 0

    # a fresh run after more source changes converges too
    change_sources(conn, 1)
    expected_2 = uninterrupted_rows(conn, "1b")
    assert expected_2 != expected
    assert pipeline.run(pipeline.refresh_domain, CS, D, "run-1-fresh") == len(expected_2)
    assert day_rows(reader, TABLE) == expected_2
    assert advisory_locks(reader) == 0


def test_sigkill_during_publish_loses_nothing(conn, reader, locker, tmp_path):
    good = publish_good_day(conn)
    change_sources(conn, 0)
    expected = uninterrupted_rows(conn, "2")
    assert expected != day_rows(conn, TABLE)
    assert pipeline.stage(conn, CS, D, run_id="run-2") == len(expected)
    slice_id = pipeline.stage_key("run-2")
    assert day_rows(conn, STAGING, slice_id) == expected

    # publish's last statement upserts this row: it waits there, entity already swapped (uncommitted)
    assert locker.execute("select run_id from metrics_ops.publish_log where target = %s "
                          "and metric_date = %s for update", (CS.table, D)).fetchall() == [("good",)]
    proc = start_step("publish", "run-2", tmp_path / "publish.log")
    try:
        backend = wait_blocked(reader, "insert into metrics_ops.publish_log",
                               lambda: proc.poll() is None, "the publish")
        # it holds the publish lock, and has deleted the entity day and the staged slice (the
        # rows are locked by its uncommitted deletes), i.e. it inserted the new day in between
        assert reader.execute("select count(*) from pg_locks where locktype = 'advisory' "
                              "and pid = %s and granted", (backend,)).fetchone()[0] == 1
        for table, where, params in ((TABLE, "metric_date = %s", (D,)),
                                     (STAGING, "stage_id = %s", (slice_id,))):
            with pytest.raises(psycopg.errors.LockNotAvailable):
                reader.execute(f"select 1 from {table} where {where} for update nowait", params)
        assert table_dump(reader, TABLE) == good
        kill_and_release(reader, proc, backend, locker, "SIGKILL during publish")
    finally:
        if proc.poll() is None:
            proc.kill()

    # readers see the last good day; the killed publish rolled back: slice intact, no publication
    assert table_dump(reader, TABLE) == good
    assert day_rows(reader, STAGING, slice_id) == expected
    assert reader.execute("select run_id from metrics_ops.publish_log where target = %s "
                          "and metric_date = %s", (CS.table, D)).fetchall() == [("good",)]
    assert reader.execute("select count(*) from metrics_ops.publish_history where run_id = 'run-2'"
                          ).fetchone()[0] == 0

    # Airflow's retry of the publish task publishes the slice; a further retry is a no-op
    assert pipeline.run(pipeline.publish, CS, D, "run-2") == len(expected)
    assert day_rows(reader, TABLE) == expected
    assert reader.execute(f"select count(*) from {STAGING}").fetchone()[0] == 0
    assert pipeline.run(pipeline.publish, CS, D, "run-2") == len(expected)
    assert day_rows(reader, TABLE) == expected
    assert reader.execute("select run_id, row_count from metrics_ops.publish_log where target = %s "
                          "and metric_date = %s", (CS.table, D)).fetchall() == [("run-2", len(expected))]

    # a fresh run after more source changes converges too
    change_sources(conn, 1)
    expected_2 = uninterrupted_rows(conn, "2b")
    assert expected_2 != expected
    assert pipeline.run(pipeline.refresh_domain, CS, D, "run-2-fresh") == len(expected_2)
    assert day_rows(reader, TABLE) == expected_2
    assert advisory_locks(reader) == 0


@pytest.fixture
def scratch_warehouse(monkeypatch, pg_server):
    """A PostgreSQL of its own (this test restarts it), stopped and removed at the end; the
    layer's warehouse connection points at it for the test."""
    with scratch_server("metrics") as server:
        monkeypatch.setenv(local.WAREHOUSE_ENV, local.connection_json(server, "metrics"))
        # the layer's connection works; Airflow (imported by it) sets up its logging here, not
        # in the middle of the test, where it would drop caplog's handler
        pipeline.connect().close()
        yield server


def test_a_postgresql_restart_during_a_build_is_retried(scratch_warehouse, caplog):
    host = local.socket_dir(scratch_warehouse)
    conn = _connect(host, "metrics")
    good = publish_good_day(conn)
    change_sources(conn, 0)
    expected = uninterrupted_rows(conn, "3")
    assert expected != day_rows(conn, TABLE)
    conn.close()

    locker = _connect(host, "metrics", autocommit=False)
    locker.execute(f"lock table {BLOCKING_SOURCE} in access exclusive mode")
    attempts: list[int] = []
    outcome: dict = {}

    def build_staging(c, *args):  # pipeline.build_staging, counting its attempts
        attempts.append(c.info.backend_pid)
        return pipeline.build_staging(c, *args)

    def work():
        try:
            outcome["rows"] = pipeline.run(build_staging, CS, D, "run-3")
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    with caplog.at_level(logging.WARNING, logger="metrics_layer.pipeline"):
        thread.start()
        with _connect(host, "metrics") as watcher:
            wait_blocked(watcher, f"insert into {STAGING}", thread.is_alive, "the build")
            assert table_dump(watcher, TABLE) == good
        started = time.monotonic()
        scratch_warehouse.stop()
        time.sleep(3)  # down for a while: the first reconnect finds no server
        scratch_warehouse.ensure_postgres_running()
        restarted = time.monotonic() - started
        thread.join(60)
    locker.close()
    assert not thread.is_alive()
    if "error" in outcome:  # only acceptable if the restart outlasted the retries
        assert is_transient(outcome["error"]), repr(outcome["error"])
        pytest.fail(f"the build failed after the restart ({restarted:.1f}s): {outcome['error']!r}")
    assert outcome["rows"] == len(expected)
    assert len(attempts) >= 2  # the step ran again, on a new connection
    retried = [r.getMessage() for r in caplog.records if "transient error" in r.getMessage()]
    assert any(m.startswith("build_staging: transient error") for m in retried), retried
    log.warning("restart: down %.1fs, %d attempts; %s", restarted, len(attempts), retried)

    conn = _connect(host, "metrics")
    try:
        assert table_dump(conn, TABLE) == good
        assert advisory_locks(conn) == 0
        assert pipeline.run(pipeline.publish, CS, D, "run-3") == len(expected)
        assert day_rows(conn, TABLE) == expected
    finally:
        conn.close()
