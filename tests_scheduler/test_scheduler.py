"""The project's DAGs under a real Airflow 3.3 scheduler (LocalExecutor, api-server, dag-processor,
triggerer; metadata in PostgreSQL), triggered with the CLI and the REST API, checked against the
warehouse. The tests share one deployment and run in file order; every test starts with no run
queued or running anywhere (conftest's autouse `quiet_scheduler`), and each uses its own dates.

Behaviour under test (the README's promises):
- a domain DAG run builds one metric_date: its data interval end (= logical date for the daily
  CronTriggerTimetable), or its run_after date when the logical date is null (API/Asset triggers);
- the fan-in `metrics_unified` follows any domain publishing (Assets), with no manual trigger;
- `airflow backfill create` fills a range; `--reprocess-behavior completed` rebuilds it identically;
- runs of different dates, or of the same date, of one DAG may overlap and still all succeed;
- bad input (a missing source table) fails the run once, without retries, with one Slack alert.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import pytest
from psycopg import sql

from conftest import DOMAIN_DAGS, TODAY, UNIFIED_DAG, days_ago, parse_ts
from metrics_layer.registry import load_registry

D1 = days_ago(1)                                # test 1: all four domains, then the fan-in
BACKFILL_FROM, BACKFILL_TO = days_ago(6), days_ago(4)
BACKFILL_DATES = [BACKFILL_FROM + timedelta(days=i) for i in range(3)]
PARALLEL_DATES = (days_ago(9), days_ago(8))     # test 3: two dates of one DAG at once
SAME_DATE = days_ago(11)                        # test 3: one date twice at once
FAIL_DATE = days_ago(13)                        # test 4: missing source table
CS = "metrics_customer_success"


# ---------------------------------------------------------------------------- warehouse helpers

def domains_by_table() -> dict:
    return {d.table: d for d in load_registry().values()}


def expected_unified(conn, d: date) -> dict[str, int]:
    """Per domain: the non-null implemented numeric metric values of its table on `d` (the rows
    the unified unpivot must hold), computed independently of the fan-in's SQL."""
    out = {}
    for dom in load_registry().values():
        q = sql.SQL("select {} from {} where metric_date = %s").format(
            sql.SQL(" + ").join(sql.SQL("count({})").format(sql.Identifier(m.name)) for m in dom.unified),
            sql.Identifier("entity", dom.table))
        out[dom.name] = conn.execute(q, (d,)).fetchone()[0]
    return out


def unified_counts(conn, d: date) -> dict[str, int]:
    rows = conn.execute("select domain, count(*) from entity.metrics_unified_domains "
                        "where metric_date = %s group by 1", (d,)).fetchall()
    counts = {dom.name: 0 for dom in load_registry().values()}
    counts.update(dict(rows))
    return counts


def row_count(conn, table: str, d: date) -> int:
    return conn.execute(sql.SQL("select count(*) from {} where metric_date = %s").format(
        sql.Identifier("entity", table)), (d,)).fetchone()[0]


def dump(conn, table: str, dates: list[date]) -> list[tuple]:
    """Every row of entity.<table> for `dates`, as text, in a stable order."""
    return conn.execute(sql.SQL("select t.*::text from {} as t where metric_date = any(%s) order by 1")
                        .format(sql.Identifier("entity", table)), (dates,)).fetchall()


def publish_log(conn, table: str, d: date) -> dict | None:
    row = conn.execute("select published_at, run_id, row_count from metrics_ops.publish_log "
                       "where target = %s and metric_date = %s", (table, d)).fetchone()
    return dict(zip(("published_at", "run_id", "row_count"), row, strict=True)) if row else None


def active_customers(conn, d: date) -> int:
    return conn.execute(
        "select count(*) from raw.customers where created_at < %(d)s "
        "and (churned_at is null or churned_at >= %(d)s)", {"d": d}).fetchone()[0]


def at(d: date, hour: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


def one_run(airflow, dag_id: str, d: date | datetime) -> dict:
    runs = airflow.runs_at(dag_id, d)
    assert len(runs) == 1, f"{dag_id} at {d}: expected one run, got {[r['dag_run_id'] for r in runs]}"
    return runs[0]


# ---------------------------------------------------------------------------- 0: the scheduled runs

def test_unpausing_runs_today_and_the_fan_in_follows(airflow, warehouse):
    """Set-up unpaused every DAG: each daily domain DAG (catchup=False) ran once for today, on its
    own, and the fan-in followed through the Assets."""
    for dag_id in DOMAIN_DAGS:
        runs = airflow.dag_runs(dag_id)
        assert [(r["run_type"], r["logical_date"][:10], r["state"]) for r in runs] == \
            [("scheduled", TODAY.isoformat(), "success")], dag_id
        assert row_count(warehouse, dag_id, TODAY) > 0, dag_id
    unified_runs = airflow.dag_runs(UNIFIED_DAG)
    assert unified_runs and {(r["run_type"], r["state"]) for r in unified_runs} == \
        {("asset_triggered", "success")}
    expected = expected_unified(warehouse, TODAY)
    assert unified_counts(warehouse, TODAY) == expected and min(expected.values()) > 0


# ---------------------------------------------------------------------------- 1: four domains, fan-in

def test_four_domains_for_one_date_then_the_fan_in_runs_by_assets(airflow, warehouse):
    unified_before = airflow.dag_runs(UNIFIED_DAG)
    # `airflow dags trigger <dag> --logical-date D` for the four domain DAGs, at once
    airflow.cli_parallel(("dags", "trigger", dag_id, "--logical-date", f"{D1}T00:00:00+00:00")
                         for dag_id in DOMAIN_DAGS)
    runs = [one_run(airflow, dag_id, D1) for dag_id in DOMAIN_DAGS]
    assert {r["run_type"] for r in runs} == {"manual"}
    airflow.wait_for_runs(runs)

    for dag_id in DOMAIN_DAGS:
        n = row_count(warehouse, dag_id, D1)
        assert n > 0 and publish_log(warehouse, dag_id, D1)["row_count"] == n, dag_id
    assert row_count(warehouse, CS, D1) == active_customers(warehouse, D1)

    # no manual trigger: the fan-in runs because the domains published their Assets
    airflow.settle()
    fan_in = airflow.new_runs(UNIFIED_DAG, unified_before)
    assert fan_in, "metrics_unified did not run after the four domain DAGs published"
    assert {(r["run_type"], r["state"]) for r in fan_in} == {("asset_triggered", "success")}, fan_in
    expected = expected_unified(warehouse, D1)
    assert unified_counts(warehouse, D1) == expected and min(expected.values()) > 0


# ---------------------------------------------------------------------------- 2: backfill

@pytest.fixture(scope="module")
def sales_backfill(airflow, warehouse):
    """README: `airflow backfill create --dag-id D --from-date A --to-date B`; --max-active-runs 2
    caps how many dates run at once (Airflow's default is 10)."""
    unified_before = airflow.dag_runs(UNIFIED_DAG)
    out = airflow.cli("backfill", "create", "--dag-id", "metrics_sales",
                      "--from-date", BACKFILL_FROM.isoformat(), "--to-date", BACKFILL_TO.isoformat(),
                      "--max-active-runs", "2")
    runs = [one_run(airflow, "metrics_sales", d) for d in BACKFILL_DATES]
    assert {r["run_type"] for r in runs} == {"backfill"}, runs
    runs = airflow.wait_for_runs(runs, timeout=240)
    return {"runs": runs, "unified_before": unified_before, "output": out.stdout + out.stderr}


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def test_backfill_fills_the_dates(airflow, warehouse, sales_backfill):
    intervals = []
    for d, run in zip(BACKFILL_DATES, sales_backfill["runs"], strict=True):
        n = row_count(warehouse, "metrics_sales", d)
        log = publish_log(warehouse, "metrics_sales", d)
        assert n > 0 and log["row_count"] == n and log["run_id"] == run["dag_run_id"], (d, n, log)
        tis = airflow.task_instances("metrics_sales", run["dag_run_id"])
        intervals.append((min(parse_ts(t["start_date"]) for t in tis),
                          max(parse_ts(t["end_date"]) for t in tis)))
    # --max-active-runs 2: never more than two of the three dates running at once
    assert _max_overlap(intervals) <= 2


def test_backfill_of_one_domain_reaches_the_unified_table(airflow, warehouse, sales_backfill):
    """No manual trigger of metrics_unified: the sales Asset alone must bring the backfilled
    dates into the unified table (the fan-in follows ANY domain, not all four)."""
    airflow.settle()
    fan_in = airflow.new_runs(UNIFIED_DAG, sales_backfill["unified_before"])
    got = {d: unified_counts(warehouse, d)["sales"] for d in BACKFILL_DATES}
    want = {d: expected_unified(warehouse, d)["sales"] for d in BACKFILL_DATES}
    assert fan_in, f"metrics_unified never ran after the sales backfill; unified sales rows {got}, want {want}"
    assert {r["state"] for r in fan_in} == {"success"}, fan_in
    assert got == want and min(want.values()) > 0


def test_backfill_default_reprocess_none_skips_dates_that_have_runs(airflow, warehouse, metadata_db):
    """`--reprocess-behavior none` (the default) for a date that already has a run: the CLI still
    logs "Created backfill Dag run." and exits 0, but creates no run and changes nothing (it
    records the date in the backfill as skipped, reason "already exists"). Checked on
    metrics_marketing for today, whose scheduled run ran at set-up (a different DAG than the sales
    backfill, so no wait for that backfill to be marked complete, which the scheduler does only
    every 30 s; until then a second backfill of the same DAG is refused)."""
    before = airflow.runs_at("metrics_marketing", TODAY)
    published = publish_log(warehouse, "metrics_marketing", TODAY)
    out = airflow.cli("backfill", "create", "--dag-id", "metrics_marketing",
                      "--from-date", TODAY.isoformat(), "--to-date", TODAY.isoformat())
    assert "Created backfill Dag run" in out.stdout + out.stderr
    # the CLI creates runs in its own transaction: whatever it created exists once it returns
    after = airflow.runs_at("metrics_marketing", TODAY)
    assert [(r["dag_run_id"], r["run_type"], r["end_date"]) for r in after] == \
        [(r["dag_run_id"], r["run_type"], r["end_date"]) for r in before]
    assert publish_log(warehouse, "metrics_marketing", TODAY) == published
    backfills = airflow.api("GET", "/backfills", params={"dag_id": "metrics_marketing"})["backfills"]
    assert len(backfills) == 1 and backfills[0]["reprocess_behavior"] == "none"
    # what Airflow recorded for the date (not in the public REST API): no run, "already exists"
    assert metadata_db.execute(
        "select dag_run_id, exception_reason from backfill_dag_run where backfill_id = %s",
        (backfills[0]["id"],)).fetchall() == [(None, "already exists")]


# ---------------------------------------------------------------------------- 3: overlapping runs

def test_two_dates_of_one_dag_at_once(airflow, warehouse):
    runs = [airflow.trigger(CS, at(d)) for d in PARALLEL_DATES]  # back to back, REST API
    airflow.wait_for_runs(runs)
    for d, run in zip(PARALLEL_DATES, runs, strict=True):
        assert row_count(warehouse, CS, d) == active_customers(warehouse, d) > 0
        assert publish_log(warehouse, CS, d)["run_id"] == run["dag_run_id"]


def test_the_same_metric_date_twice_at_once(airflow, warehouse):
    """A UI trigger stamps "now" as the logical date, so two runs for one metric_date (D 00:00 and
    D 12:00) can overlap; both must succeed and leave exactly one run's rows for D."""
    runs = [airflow.trigger(CS, at(SAME_DATE, h)) for h in (0, 12)]
    airflow.wait_for_runs(runs)
    concurrent = dump(warehouse, CS, [SAME_DATE])
    assert len(concurrent) == active_customers(warehouse, SAME_DATE) > 0
    assert publish_log(warehouse, CS, SAME_DATE)["run_id"] in {r["dag_run_id"] for r in runs}
    # the reference: one run alone for the same metric_date
    airflow.wait_for_runs([airflow.trigger(CS, at(SAME_DATE, 6))])
    assert dump(warehouse, CS, [SAME_DATE]) == concurrent


# ---------------------------------------------------------------------------- 4: bad input

def test_a_missing_source_fails_once_and_alerts_once(airflow, warehouse, slack):
    posts_before = len(slack)
    # the table disappears (renamed away, so it comes back exactly as it was)
    warehouse.execute("alter table raw.device_telemetry rename to device_telemetry_hidden")
    try:
        run = airflow.trigger(CS, at(FAIL_DATE))
        (run,) = airflow.wait_for_runs([run], expect=None)
    finally:
        warehouse.execute("alter table raw.device_telemetry_hidden rename to device_telemetry")
    assert run["state"] == "failed"
    tis = {t["task_id"]: t for t in airflow.task_instances(CS, run["dag_run_id"])}
    assert tis["check_sources"]["state"] == "failed" and tis["check_sources"]["try_number"] == 1
    assert {t["state"] for k, t in tis.items() if k != "check_sources"} == {"upstream_failed"}
    log = airflow.task_log(CS, run["dag_run_id"], "check_sources", 1)
    assert "source table(s) missing: raw.device_telemetry" in log
    # the alert is sent by the failing task's process: allow it a moment, then no second one
    airflow.wait_until("the Slack alert", lambda: len(slack) > posts_before, timeout=30)
    time.sleep(3)
    texts = slack.texts_since(posts_before)
    assert len(texts) == 1, texts
    assert CS in texts[0] and "check_sources" in texts[0]
    assert "source table(s) missing: raw.device_telemetry" in texts[0]
    assert row_count(warehouse, CS, FAIL_DATE) == 0


# ---------------------------------------------------------------------------- 5: no logical date

def test_a_run_without_logical_date_builds_its_run_date(airflow, warehouse):
    """`airflow dags trigger D` without --logical-date: a null logical date (as Asset- and
    API-triggered runs have). The run builds its run_after date (today, UTC)."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    airflow.cli("dags", "trigger", "metrics_sales")
    runs = [r for r in airflow.dag_runs("metrics_sales", run_after_gte=since.isoformat())
            if r["run_type"] == "manual"]
    assert len(runs) == 1 and runs[0]["logical_date"] is None, runs
    assert parse_ts(runs[0]["run_after"]).date() == TODAY
    airflow.wait_for_runs(runs)
    log = publish_log(warehouse, "metrics_sales", TODAY)
    assert log["run_id"] == runs[0]["dag_run_id"], log
    assert log["row_count"] == row_count(warehouse, "metrics_sales", TODAY) > 0


# ---------------------------------------------------------------------------- 2 (cont.): reprocess

def test_backfill_reprocess_completed_rebuilds_identically(airflow, warehouse, sales_backfill):
    """`--reprocess-behavior completed` clears the existing runs of the range (same run ids, next
    try) and reruns them: publish_log moves, the rows stay identical."""
    rows_before = dump(warehouse, "metrics_sales", BACKFILL_DATES)
    logs_before = {d: publish_log(warehouse, "metrics_sales", d) for d in BACKFILL_DATES}
    # one active backfill per DAG: the scheduler marks the first one complete every 30 s
    airflow.wait_until("the first sales backfill to be marked complete", lambda: all(
        b["completed_at"] for b in airflow.api("GET", "/backfills", params={"dag_id": "metrics_sales"})
        ["backfills"]), timeout=45)
    started = datetime.now(UTC)
    airflow.cli("backfill", "create", "--dag-id", "metrics_sales",
                "--from-date", BACKFILL_FROM.isoformat(), "--to-date", BACKFILL_TO.isoformat(),
                "--max-active-runs", "2", "--reprocess-behavior", "completed")
    runs = [one_run(airflow, "metrics_sales", d) for d in BACKFILL_DATES]
    assert [r["dag_run_id"] for r in runs] == [r["dag_run_id"] for r in sales_backfill["runs"]]
    runs = airflow.wait_for_runs(runs, timeout=240)
    for d, run in zip(BACKFILL_DATES, runs, strict=True):
        assert parse_ts(run["end_date"]) > started
        assert {t["try_number"] for t in airflow.task_instances("metrics_sales", run["dag_run_id"])} == {2}
        log = publish_log(warehouse, "metrics_sales", d)
        assert log["published_at"] > logs_before[d]["published_at"]
        assert log["row_count"] == logs_before[d]["row_count"]
    assert dump(warehouse, "metrics_sales", BACKFILL_DATES) == rows_before


# ---------------------------------------------------------------------------- 6: the fan-in, overall

def test_the_unified_table_matches_every_domain_table_for_every_date(airflow, warehouse):
    """After everything above (scheduled, manual, backfilled, overlapping, reprocessed and failed
    runs), with no manual trigger of the fan-in: for every date and domain, the unified table
    holds exactly the rows an independent unpivot count of the domain table gives. A fan-in
    fired early (a stale queued Asset event) or not at all leaves a date behind."""
    airflow.settle()
    dates = sorted({r[0] for t in domains_by_table() for r in warehouse.execute(
        sql.SQL("select distinct metric_date from {}").format(sql.Identifier("entity", t))).fetchall()}
        | {r[0] for r in warehouse.execute(
            "select distinct metric_date from entity.metrics_unified_domains").fetchall()})
    mismatches = {d: (unified_counts(warehouse, d), expected_unified(warehouse, d)) for d in dates}
    mismatches = {d: {k: (got[k], want[k]) for k in want if got[k] != want[k]}
                  for d, (got, want) in mismatches.items()}
    mismatches = {d: m for d, m in mismatches.items() if m}
    assert not mismatches, ("(domain: (unified rows, expected)) per date: "
                            + "; ".join(f"{d}: {m}" for d, m in sorted(mismatches.items())))
