"""Operating the layer as a deployment does: errors that fail fast or retry, the CLI, a plain
warehouse, the fan-in under races and partial failure, overlapping runs of one date, DDL kept off
the daily path, and how a run finds its metric_date. Every test runs real DAGs or real pipeline
steps against the embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, date, timedelta

import psycopg
import pytest

from conftest import ROOT, TEST_DB
from helpers import table_dump
from metrics_layer import local, pipeline, seed, validation
from metrics_layer.errors import WarehouseBusy, is_transient
from metrics_layer.registry import load_registry, source_domains

TODAY = date.today()
YESTERDAY = TODAY - timedelta(days=1)
REGISTRY = load_registry()
CS = REGISTRY["customer_success"]
SALES = REGISTRY["sales"]
CS_TABLE = "entity.metrics_customer_success"


@pytest.fixture
def seeded(conn):
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    return conn


def _cli(*args: str, env: dict | None = None, timeout: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "metrics_layer.cli", *args], capture_output=True,
                       text=True, env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
    return r, time.monotonic() - started


def _conn_json(server, database: str, **extra) -> str:
    return json.dumps({**json.loads(local.connection_json(server, database)), **extra})


# ---------------------------------------------------------------------------- errors

def test_errors_a_retry_cannot_fix_are_permanent_the_others_transient(pg_server):
    sock = local.socket_dir(pg_server)
    attempts = {
        "missing database": dict(host=sock, user="postgres", dbname="no_such_database"),
        "unknown role": dict(host=sock, user="no_such_role", dbname=TEST_DB),
        "refused": dict(host="127.0.0.1", port=1, user="postgres", dbname=TEST_DB, connect_timeout=2),
        "no socket": dict(host="/nonexistent", user="postgres", dbname=TEST_DB),
    }
    verdict = {}
    for name, kwargs in attempts.items():
        with pytest.raises(psycopg.OperationalError) as err:
            psycopg.connect(**kwargs)
        verdict[name] = is_transient(err.value)
    with psycopg.connect(host=sock, user="postgres", dbname=TEST_DB, autocommit=True) as c:
        for name, sql in {"missing relation": "select * from no_such_table",
                          "bad sql": "selec 1", "division by zero": "select 1 / 0",
                          "statement timeout": "set statement_timeout = 50; select pg_sleep(1)"}.items():
            with pytest.raises(psycopg.Error) as err:
                c.execute(sql)
            verdict[name] = is_transient(err.value)
            c.execute("reset statement_timeout")
    assert verdict == {"missing database": False, "unknown role": False, "refused": True,
                       "no socket": True, "missing relation": False, "bad sql": False,
                       "division by zero": False, "statement timeout": True}
    assert is_transient(WarehouseBusy("lock held"))


def test_make_dag_against_a_missing_database_fails_at_once_and_alerts(pg_server, slack):
    """Observed: check_sources went up_for_retry for 15 minutes and `make dag` printed "No tasks
    to run" once a second, with no alert until the retries were spent."""
    env = {local.WAREHOUSE_ENV: _conn_json(pg_server, "no_such_database")}
    r, seconds = _cli("dag", "metrics_customer_success", str(TODAY), env=env, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    assert seconds < 90, f"took {seconds:.0f}s"
    # dag.test marks the downstream tasks upstream_failed, one a second; never a retry wait
    assert out.count("No tasks to run") <= 4
    assert "retries off" in out
    assert len(slack.posts) == 1
    text = slack.texts[0]
    assert "Task `check_sources` (try 1)" in text
    assert 'database "no_such_database" does not exist' in text
    assert "not retried" in text


def test_make_run_takes_a_date_through_every_domain_and_the_fan_in(seeded):
    """`make run DATE=...`: one command for a rerun; a failing domain does not stop the others,
    and the fan-in publishes the three that succeeded."""
    seeded.execute("alter table raw.ad_spend_daily rename to ad_spend_gone")
    r, _ = _cli("run", str(YESTERDAY), timeout=400)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-3000:]
    assert f"[4/4] metrics_sales {YESTERDAY}: success" in out
    assert f"[2/4] metrics_marketing {YESTERDAY}: failed" in out
    assert "metrics_unified (fan-in): success" in out
    assert f"failed: metrics_marketing {YESTERDAY}" in out
    # the company overview is built from the three that published (marketing KPIs NULL)
    assert _unified_domains(seeded, YESTERDAY) == {"customer_success", "sales", "product", "company"}
    assert seeded.execute("select total_mrr is not null, total_ad_spend is null from "
                          "entity.metrics_company_overview where metric_date = %s",
                          (YESTERDAY,)).fetchone() == (True, True)


# ---------------------------------------------------------------------------- a plain warehouse

def test_demo_works_on_a_plain_warehouse_at_utc_plus_14(pg_server):
    """Observed: `make demo` on a user's PostgreSQL built every table, then crashed printing the
    guide's query (the entity search_path was set only on the embedded database)."""
    name = f"{TEST_DB}_plain"
    with psycopg.connect(host=local.socket_dir(pg_server), user="postgres", dbname="postgres",
                         autocommit=True) as c:
        c.execute(f'drop database if exists "{name}" with (force)')
        c.execute(f'create database "{name}"')
        # nothing set on the database: default search_path, and a time zone a day ahead of UTC
        c.execute(f"alter database \"{name}\" set timezone = 'Pacific/Kiritimati'")
    # and a machine whose local date is not the UTC date (UTC+14 late in the UTC day, UTC-12
    # early in it): metric dates are UTC days, so CURRENT_DATE finds today's rows all the same
    from datetime import datetime
    machine_tz = "Pacific/Kiritimati" if datetime.now(UTC).hour >= 12 else "Etc/GMT+12"
    env = {local.WAREHOUSE_ENV: _conn_json(pg_server, name), "TZ": machine_tz}
    r, _ = _cli("demo", "--scale", "0.05", "--days", "35", "--runs", "1", env=env, timeout=400)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "does not exist" not in out
    # the four guide queries are printed; the Basic Query shows 10 customers of today
    basic = out.split("01_basic_query:")[1].split("02_domain_overview:")[0]
    assert "customer_health_score" in basic
    assert basic.count(f"│ {TODAY}") == 10, out[-2500:]
    for name in ("03_time_series_analysis:", "04_cross_domain_analysis:"):
        assert name in out
    # and the company overview's headline
    assert "company           total_mrr" in out


# ---------------------------------------------------------------------------- fan-in

def _unified_domains(conn, d: date) -> set[str]:
    return {r[0] for r in conn.execute(
        "select distinct domain from entity.metrics_unified_domains where metric_date = %s", (d,))}


def test_three_domains_reach_the_unified_table_while_the_fourth_fails(seeded):
    marketing = REGISTRY["marketing"]
    for d in source_domains():
        if d is not marketing:
            pipeline.refresh_domain(seeded, d, TODAY, f"run-{d.name}")
    seeded.execute("alter table raw.ad_spend_daily rename to ad_spend_gone")
    with pytest.raises(Exception, match="ad_spend_daily"):
        pipeline.refresh_domain(seeded, marketing, TODAY, "run-marketing")
    assert pipeline.build_unified(seeded, "fan-in-1").keys() == {"customer_success", "sales", "product"}
    assert _unified_domains(seeded, TODAY) == {"customer_success", "sales", "product"}
    # fixed and rerun: only marketing's slice is rebuilt
    seeded.execute("alter table raw.ad_spend_gone rename to ad_spend_daily")
    pipeline.refresh_domain(seeded, marketing, TODAY, "run-marketing-2")
    assert pipeline.build_unified(seeded, "fan-in-2").keys() == {"marketing"}
    assert _unified_domains(seeded, TODAY) == {"customer_success", "sales", "product", "marketing"}
    # the day's publication counts every domain's rows, not only the slice this run rebuilt
    logged = seeded.execute("select row_count from metrics_ops.publish_log where target = "
                            "'metrics_unified_domains' and metric_date = %s", (TODAY,)).fetchone()[0]
    counted = seeded.execute("select count(*) from entity.metrics_unified_domains where metric_date = %s",
                             (TODAY,)).fetchone()[0]
    marketing_rows = seeded.execute("select count(*) from entity.metrics_unified_domains where "
                                    "metric_date = %s and domain = 'marketing'", (TODAY,)).fetchone()[0]
    assert logged == counted > marketing_rows > 0
    assert pipeline.build_unified(seeded, "fan-in-3") == {}


def _entity_name(conn, customer_id: int, d: date) -> str:
    return conn.execute(
        "select distinct entity_name from entity.metrics_unified_domains where domain = "
        "'customer_success' and entity_id = %s and metric_date = %s", (str(customer_id), d)).fetchone()[0]


def _wait_for_lock_wait(conn, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.execute("select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                        "and datname = current_database()").fetchone()[0]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} never waited on a lock")


def test_a_publication_racing_the_fan_in_is_picked_up_by_the_next_fan_in(seeded, pg_server):
    """Observed: the fan-in stamped a date as built with clock_timestamp() after its insert had
    read the domain tables; a domain publishing in between was recorded as included and the date
    stayed stale for good."""
    pipeline.refresh_domain(seeded, CS, TODAY, "run-1")
    pipeline.build_unified(seeded, "fan-in-1")
    cid = seeded.execute(f"select min(customer_id) from {CS_TABLE}").fetchone()[0]
    seeded.execute("update raw.customers set customer_name = 'Alpha' where customer_id = %s", (cid,))
    pipeline.refresh_domain(seeded, CS, TODAY, "run-2")

    # hold the fan-in at its last step (the unified row of publish_log) ...
    blocker = psycopg.connect(host=local.socket_dir(pg_server), user="postgres", dbname=TEST_DB)
    blocker.execute("select * from metrics_ops.publish_log where target = 'metrics_unified_domains' "
                    "and metric_date = %s for update", (TODAY,))
    fan_in = threading.Thread(target=lambda: pipeline.run(pipeline.build_unified, "fan-in-2"))
    fan_in.start()
    try:
        _wait_for_lock_wait(seeded, "the fan-in")
        # ... while customer success publishes again (Alpha becomes Beta)
        seeded.execute("update raw.customers set customer_name = 'Beta' where customer_id = %s", (cid,))
        pipeline.refresh_domain(seeded, CS, TODAY, "run-3")
    finally:
        blocker.rollback()
        blocker.close()
        fan_in.join(60)
    assert not fan_in.is_alive()
    assert _entity_name(seeded, cid, TODAY) == "Alpha"  # what the racing fan-in read
    assert pipeline.stale_slices(seeded) == {"customer_success": [TODAY]}
    pipeline.build_unified(seeded, "fan-in-3")  # the next fan-in run (the Asset fires it)
    assert _entity_name(seeded, cid, TODAY) == "Beta"
    assert pipeline.stale_slices(seeded) == {}


# ---------------------------------------------------------------------------- same-date runs

def test_two_runs_of_one_date_keep_their_own_slices_and_both_publish(seeded):
    """Observed: a UI trigger during the scheduled run of the same date shared staging; the
    second run failed with "duplicate keys ... Check the sources", and a retried publish after
    its commit failed for good with "nothing staged"."""
    sched, manual = "scheduled__2026", "manual__2026"
    pipeline.stage(seeded, CS, TODAY, run_id=sched)
    cid = seeded.execute("select min(customer_id) from raw.customers").fetchone()[0]
    seeded.execute("update raw.customers set customer_name = 'Renamed' where customer_id = %s", (cid,))
    n = pipeline.build_staging(seeded, CS, TODAY, manual)
    staged = dict(seeded.execute("select stage_id, count(*) from metrics_staging.metrics_customer_success "
                                 "group by 1").fetchall())
    assert staged == {pipeline.stage_key(sched): n, pipeline.stage_key(manual): n}
    sessions = ("select count(*) from pg_stat_activity where datname = current_database() "
                "and application_name = 'metrics_layer'")
    open_before = seeded.execute(sessions).fetchone()[0]
    for run_id in (sched, manual):
        assert validation.validate_day(CS, TODAY, run_id).success
    # every connection validation opened is closed: a backend leaves pg_stat_activity a moment
    # after its client closed (CI once counted one still exiting), a leaked one never does
    deadline = time.monotonic() + 5
    while seeded.execute(sessions).fetchone()[0] != open_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seeded.execute(sessions).fetchone()[0] == open_before
    assert pipeline.publish(seeded, CS, TODAY, sched) == n
    assert pipeline.publish(seeded, CS, TODAY, manual) == n
    # the later publication wins, whole: one row set for the date
    assert seeded.execute(f"select count(*), count(*) filter (where customer_name = 'Renamed') "
                          f"from {CS_TABLE} where metric_date = %s", (TODAY,)).fetchone() == (n, 1)
    # a retried publish of either run (Airflow retries a task whose commit it did not see)
    assert pipeline.publish(seeded, CS, TODAY, manual) == n
    assert pipeline.publish(seeded, CS, TODAY, sched) == n
    assert seeded.execute("select count(*) from metrics_staging.metrics_customer_success").fetchone()[0] == 0
    assert seeded.execute("select count(*), count(distinct run_id) from metrics_ops.publish_history "
                          "where target = %s", (CS.table,)).fetchone() == (2, 2)


def test_a_retried_build_replaces_its_own_slice(seeded):
    pipeline.stage(seeded, CS, TODAY, run_id="r1")
    n = pipeline.build_staging(seeded, CS, TODAY, "r1")
    assert seeded.execute("select count(*) from metrics_staging.metrics_customer_success").fetchone()[0] == n


# ---------------------------------------------------------------------------- locks and DDL

def test_the_daily_path_runs_no_ddl_and_a_long_reader_blocks_nothing(seeded, pg_server):
    """Observed: every run altered every entity table (ACCESS EXCLUSIVE) with no lock_timeout:
    one long Superset query stalled every DAG, and then every dashboard."""
    pipeline.refresh_domain(seeded, CS, YESTERDAY, "day-1")
    good = table_dump(seeded, CS_TABLE)
    assert pipeline.ensure_schema(seeded) is False  # schema hash unchanged: no DDL at all
    reader = psycopg.connect(host=local.socket_dir(pg_server), user="postgres", dbname=TEST_DB)
    reader.execute("set transaction isolation level repeatable read")
    before = reader.execute(f"select count(*) from {CS_TABLE}").fetchone()[0]
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault(
        "rows", pipeline.run(pipeline.refresh_domain, CS, TODAY, "day-2")))
    started = time.monotonic()
    worker.start()
    worker.join(60)
    elapsed = time.monotonic() - started
    try:
        assert not worker.is_alive(), "the daily run was blocked by a reader"
        assert result["rows"] > 0 and elapsed < 30
        # the reader was not blocked either, and still sees its snapshot
        assert reader.execute(f"select count(*) from {CS_TABLE}").fetchone()[0] == before == len(good)
    finally:
        reader.close()
    assert len(table_dump(seeded, CS_TABLE)) == len(good) + result["rows"]


def test_a_migration_waiting_on_a_reader_fails_within_the_lock_timeout_naming_it(seeded, pg_server,
                                                                                  monkeypatch):
    pipeline.ensure_schema(seeded)
    seeded.execute("update metrics_ops.schema_version set schema_hash = 'older'")  # a registry change
    reader = psycopg.connect(host=local.socket_dir(pg_server), user="postgres", dbname=TEST_DB,
                             application_name="superset")
    reader.execute(f"select count(*) from {CS_TABLE}")  # keeps its ACCESS SHARE lock open
    pid = reader.info.backend_pid
    monkeypatch.setenv("METRICS_LOCK_TIMEOUT", "1s")
    try:
        with pipeline.connect() as c:
            started = time.monotonic()
            with pytest.raises(WarehouseBusy) as err:
                pipeline.ensure_schema(c)
            assert time.monotonic() - started < 10
        assert f"pid {pid} (postgres, idle in transaction" in str(err.value)
        assert "nothing was changed" in str(err.value) and "retried" in str(err.value)
        assert seeded.execute("select schema_hash from metrics_ops.schema_version").fetchone()[0] == "older"
    finally:
        reader.close()
    with pipeline.connect() as c:
        assert pipeline.ensure_schema(c) is True
    assert pipeline.applied_schema_hash(seeded) == pipeline.schema_hash()


def test_every_session_of_the_layer_sets_its_own_timeouts_and_search_path(pg_server, conn, monkeypatch):
    monkeypatch.setenv("METRICS_STATEMENT_TIMEOUT", "5min")
    with pipeline.connect() as c:
        got = c.execute("select current_setting('lock_timeout'), current_setting('statement_timeout'), "
                        "current_setting('TimeZone'), current_setting('search_path'), "
                        "current_setting('idle_in_transaction_session_timeout')").fetchone()
    assert got == ("30s", "5min", "UTC", '"$user", public, entity', "10min")


# ---------------------------------------------------------------------------- metric_date

@pytest.mark.parametrize("setting", ["True", "False"])
def test_the_scheduled_run_of_a_day_builds_that_day_whatever_create_cron_data_intervals_says(setting):
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        "from airflow.timetables.base import TimeRestriction\n"
        "import pendulum\n"
        "dag = DagBag(dag_folder='dags').get_dag('metrics_sales')\n"
        "start = pendulum.datetime(2026, 3, 1, tz='UTC')\n"
        "info = dag.timetable.next_dagrun_info(last_automated_data_interval=None,\n"
        "    restriction=TimeRestriction(earliest=start, latest=None, catchup=True))\n"
        "print('RESULT', info.logical_date.isoformat(), info.run_after.isoformat())\n"
    )
    env = {**os.environ, "AIRFLOW__SCHEDULER__CREATE_CRON_DATA_INTERVALS": setting}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")]
    assert line, r.stderr[-2000:]
    # the run at 00:00 UTC on March 1 has logical date March 1: metric_date 2026-03-01
    assert line[0] == "RESULT 2026-03-01T00:00:00+00:00 2026-03-01T00:00:00+00:00"


def test_a_metric_date_param_overrides_the_logical_date(pg_server, seeded):
    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    # a DAG of its own: dag.test(run_conf=...) leaves the conf in the in-memory tasks' params
    # (Airflow 3.3.2), which would leak into other tests sharing the session's DagBag
    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("metrics_sales")
    dr = dag.test(logical_date=pendulum.datetime(TODAY.year, TODAY.month, TODAY.day, tz="UTC"),
                  run_conf={"metric_date": str(YESTERDAY)})
    assert dr.state == "success"
    dates = {r[0] for r in seeded.execute("select distinct metric_date from entity.metrics_sales")}
    assert dates == {YESTERDAY}


def test_a_run_without_a_logical_date_builds_its_run_date():
    from metrics_layer.runctx import metric_date

    class Run:  # what Airflow hands a run triggered without --logical-date
        logical_date = None
        run_after = __import__("pendulum").datetime(2026, 2, 28, 23, 30, tz="Pacific/Kiritimati")

    # 23:30 at UTC+14 on Feb 28 is 09:30 UTC on Feb 28
    assert metric_date({"dag_run": Run(), "params": {}}) == date(2026, 2, 28)
    assert metric_date({"dag_run": Run(), "params": {"metric_date": "2024-02-29"}}) == date(2024, 2, 29)


# ---------------------------------------------------------------------------- GX connection

def test_validation_connects_like_the_hook_socket_in_query_and_quietly(seeded, pg_server):
    """Observed: with the socket directory in `?host=`, every task but validate ran; the
    hand-built GX URL dropped every extra and tried /var/run/postgresql. Its log was 226 lines,
    214 of them GX's "Skipping registering function" noise."""
    pipeline.stage(seeded, CS, TODAY, run_id="gx")
    uri = (f"postgresql://postgres@/{TEST_DB}?host={local.socket_dir(pg_server)}"
           "&options=-c%20application_name%3Dgx_check")
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
            "from datetime import date\n"
            "from metrics_layer import validation\n"
            "from metrics_layer.registry import load_registry\n"
            f"s = validation.validate_day(load_registry()['customer_success'], date.fromisoformat('{TODAY}'), 'gx')\n"
            "print('RESULT', s.success, s.evaluated)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, local.WAREHOUSE_ENV: uri}, timeout=180)
    out = r.stdout + r.stderr
    assert "RESULT True 12" in out, out[-3000:]
    assert "Skipping registering function" not in out
    assert len(out.splitlines()) < 20, out
