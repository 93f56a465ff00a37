"""End to end: real DAG runs (dag.test) against the embedded Postgres on generated data; the
fan-in; the guide's example queries run unchanged; Slack alerts caught by a local HTTP server."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from decimal import Decimal

import pendulum
import pytest

from conftest import ROOT
from helpers import table_dump
from metrics_layer import alerts, seed
from metrics_layer.registry import load_registry, source_domains

TODAY = date.today()
YESTERDAY = TODAY - timedelta(days=1)
CS_TABLE = "entity.metrics_customer_success"
GUIDE_QUERIES = ROOT / "docs" / "guide_queries"


def run(dagbag, dag_id: str, d: date | None = None, conf: dict | None = None):
    kwargs: dict = {"run_conf": conf} if conf else {}
    if d is not None:
        kwargs["logical_date"] = pendulum.datetime(d.year, d.month, d.day, tz="UTC")
    return dagbag.get_dag(dag_id).test(**kwargs)


@pytest.fixture
def seeded(conn):
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    return conn


def _active_customers(conn, d: date) -> int:
    return conn.execute(
        "select count(*) from raw.customers where created_at < %(d)s "
        "and (churned_at is null or churned_at >= %(d)s)", {"d": d}).fetchone()[0]


def _break_mrr(conn, customer_id: int) -> None:
    """Bad input a real warehouse lets through: a credit note loaded as negative MRR."""
    conn.execute("alter table raw.subscriptions drop constraint if exists subscriptions_mrr_check")
    conn.execute("insert into raw.subscriptions values (999999, %s, 'credit', -50000, %s, null)",
                 (customer_id, YESTERDAY - timedelta(days=3)))


def test_every_domain_dag_runs_end_to_end(dagbag, seeded):
    for domain in source_domains():
        dr = run(dagbag, domain.table, TODAY)
        assert dr.state == "success", domain.table
        n = seeded.execute(f"select count(*) from entity.{domain.table} where metric_date = %s",
                           (TODAY,)).fetchone()[0]
        assert n > 0, domain.table
        # the staged day was moved, not copied
        assert seeded.execute(f"select count(*) from metrics_staging.{domain.table}").fetchone()[0] == 0
    assert seeded.execute(f"select count(*) from {CS_TABLE} where metric_date = %s",
                          (TODAY,)).fetchone()[0] == _active_customers(seeded, TODAY)


def test_rerunning_a_dag_for_a_date_gives_identical_rows(dagbag, seeded):
    assert run(dagbag, "metrics_customer_success", TODAY).state == "success"
    first = table_dump(seeded, CS_TABLE)
    assert run(dagbag, "metrics_customer_success", TODAY).state == "success"
    assert table_dump(seeded, CS_TABLE) == first


def test_unified_fan_in_and_the_guide_queries(dagbag, seeded):
    for d in (YESTERDAY, TODAY):
        assert run(dagbag, "metrics_customer_success", d).state == "success"
    assert run(dagbag, "metrics_unified").state == "success"
    cs = load_registry()["customer_success"]
    # one unified row per non-null implemented metric value of the domain table
    expected = seeded.execute(
        "select " + " + ".join(f"count({m.name})" for m in cs.unified)
        + f" from {CS_TABLE} where metric_date = %s", (TODAY,)).fetchone()[0]
    got = seeded.execute(
        "select count(*) from entity.metrics_unified_domains where domain = 'customer_success' "
        "and metric_date = %s", (TODAY,)).fetchone()[0]
    assert got == expected > 0
    # values and tiers come through unchanged
    row = seeded.execute(
        "select t.customer_id, t.customer_health_score from entity.metrics_customer_success t "
        "where metric_date = %s and customer_health_score is not null order by 1 limit 1",
        (TODAY,)).fetchone()
    assert seeded.execute(
        "select metric_value, importance_tier, unit from entity.metrics_unified_domains "
        "where metric_date = %s and entity_id = %s and metric_name = 'customer_health_score'",
        (TODAY, str(row[0]))).fetchone() == (row[1], "tier_1", "score_0_100")

    # nothing new published: a second fan-in run rebuilds nothing
    assert run(dagbag, "metrics_unified").state == "success"
    assert seeded.execute("select count(distinct metric_date) from entity.metrics_unified_domains "
                          ).fetchone()[0] == 2

    # the guide's queries, verbatim, on a connection with the warehouse's default search_path
    total_mrr = seeded.execute(f"select sum(current_mrr) from {CS_TABLE} where metric_date = %s",
                               (TODAY,)).fetchone()[0]
    results = {}
    for path in sorted(GUIDE_QUERIES.glob("*.sql")):
        results[path.stem] = seeded.execute(path.read_text()).fetchall()
    basic = results["01_basic_query"]
    assert len(basic) == 10 and all(r[0] == TODAY for r in basic)
    assert [r[2] for r in basic] == sorted(r[2] for r in basic)
    overview = {(r[0], r[1]) for r in results["02_domain_overview"]}
    assert ("customer_success", "customer_health_score") in overview
    cross = results["04_cross_domain_analysis"]
    assert {r[0] for r in cross} <= {"Healthy", "Stable", "At Risk"}
    # NULL health falls into 'At Risk' (the CASE's ELSE): every customer is counted once
    assert sum(r[1] for r in cross) == seeded.execute(
        f"select count(*) from {CS_TABLE} where metric_date = %s", (TODAY,)).fetchone()[0]
    assert sum(r[2] for r in cross if r[2] is not None) == total_mrr


def test_failed_validation_alerts_slack_and_keeps_the_last_good_day(dagbag, seeded, slack):
    assert run(dagbag, "metrics_customer_success", TODAY).state == "success"
    good = table_dump(seeded, CS_TABLE)
    assert slack.posts == []

    victim = seeded.execute(f"select min(customer_id) from {CS_TABLE} where metric_date = %s",
                            (TODAY,)).fetchone()[0]
    _break_mrr(seeded, victim)
    dr = run(dagbag, "metrics_customer_success", TODAY)
    assert dr.state == "failed"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    # the source check stops the day before anything is built
    assert states["check_sources"] == "failed" and states["publish"] == "upstream_failed"

    # exactly one message, naming the DAG, the date, the task and what failed
    assert len(slack.posts) == 1
    assert slack.posts[0]["path"] == "/services/T000/B000/XXX"
    text = slack.texts[0]
    assert f"*metrics_customer_success* failed for metric_date *{TODAY}*" in text
    assert "Task `check_sources`" in text
    assert "subscriptions_mrr_non_negative" in text
    assert f"subscription 999999 of customer {victim}" in text
    assert "readers still see the last good day" in text
    assert ("airflow dags trigger metrics_customer_success --conf "
            f"'{{\"metric_date\": \"{TODAY}\"}}'") in text
    assert f"make run DATE={TODAY}" in text
    # readers still see the previous good rows for the date, untouched
    assert table_dump(seeded, CS_TABLE) == good


def test_without_a_slack_connection_the_alert_is_logged_and_nothing_else_changes(
        dagbag, seeded, caplog):
    _break_mrr(seeded, 1)
    with caplog.at_level(logging.WARNING):
        assert run(dagbag, "metrics_customer_success", TODAY).state == "failed"
        assert alerts.send_slack("hello") is False
    assert "Slack connection 'slack_alerts' is not configured" in caplog.text
    # the good path is unaffected by the missing connection
    seeded.execute("delete from raw.subscriptions where subscription_id = 999999")
    assert run(dagbag, "metrics_customer_success", TODAY).state == "success"
    assert seeded.execute(f"select min(current_mrr) from {CS_TABLE}").fetchone()[0] >= Decimal(0)


def test_a_missing_source_table_fails_with_a_clear_message(dagbag, seeded, slack):
    seeded.execute("drop table raw.device_telemetry")
    dr = run(dagbag, "metrics_customer_success", TODAY)
    assert dr.state == "failed"
    assert len(slack.posts) == 1
    assert "Task `check_sources`" in slack.texts[0]
    assert "source table(s) missing: raw.device_telemetry" in slack.texts[0]


def test_the_fan_in_is_due_as_soon_as_any_domain_publishes(dagbag, seeded):
    import os
    import subprocess
    import sys

    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from metrics_layer.factory import FAN_IN_TABLES

    # what a deployment does: the dag-processor serializes the DAGs, someone unpauses the fan-in
    for cmd in (["dags", "reserialize"], ["dags", "unpause", "metrics_unified"]):
        subprocess.run([sys.executable, "-m", "airflow", *cmd], env=os.environ.copy(), check=True,
                       capture_output=True)
    with create_session() as session:
        session.execute(delete(AssetDagRunQueue))

    def due() -> bool:
        with create_session() as session:
            _, triggered = DagModel.dags_needing_dagruns(session)
            return "metrics_unified" in triggered

    # one domain failing must not freeze the others: each publication alone makes it due
    for table in FAN_IN_TABLES:
        assert not due(), f"due before {table} published"
        assert run(dagbag, table, TODAY).state == "success"
        assert due(), f"not due after {table} published"
        with create_session() as session:
            session.execute(delete(AssetDagRunQueue))
