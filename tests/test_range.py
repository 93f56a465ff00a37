"""The range path: one DAG run per domain builds many metric_dates (the `end_date` param: the
state once, one validation, one publication) and leaves exactly the rows that one run per date
leaves, in every table readers see."""

from __future__ import annotations

from datetime import date, timedelta

import pendulum
import pytest

from conftest import ROOT
from metrics_layer import cli, seed
from metrics_layer.registry import source_domains
from metrics_layer.runctx import MAX_RANGE_DAYS, metric_dates

TODAY = date.today()
DATES = [TODAY - timedelta(days=i) for i in range(5, -1, -1)]
LAYER = ("entity", "metrics_staging", "metrics_state", "metrics_ops")


def _tables(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "select format('%I.%I', schemaname, tablename) from pg_tables where schemaname = 'entity' "
        "order by 1").fetchall()]


def _checksums(conn) -> dict[str, tuple[int, str]]:
    """Row count and a hash of every row of every table of schema entity."""
    return {t: conn.execute(f"select count(*), md5(coalesce(string_agg(x::text, '|' order by x::text), '')) "
                            f"from {t} as x").fetchone() for t in _tables(conn)}


def test_a_range_run_leaves_exactly_what_one_run_per_date_leaves(conn, tmp_path):
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    assert cli.run_dates(source_domains(), DATES, tmp_path / "per-date.log", per_date=True) == []
    per_date = _checksums(conn)
    for domain in source_domains():
        assert conn.execute(f"select count(distinct metric_date) from entity.{domain.table}").fetchone()[0] == 6
    assert per_date["entity.metrics_api"][0] > 0 and per_date["entity.metrics_company_overview"][0] == 6
    runs_per_date = conn.execute("select count(distinct run_id) from metrics_ops.publish_history "
                                 "where target = 'metrics_sales'").fetchone()[0]

    for schema in LAYER:
        conn.execute(f"drop schema {schema} cascade")
    assert cli.run_dates(source_domains(), DATES, tmp_path / "range.log") == []
    assert _checksums(conn) == per_date
    # one run built the six dates of each domain
    assert runs_per_date == 6
    assert conn.execute("select count(distinct run_id), count(*) from metrics_ops.publish_history "
                        "where target = 'metrics_sales'").fetchone() == (1, 6)


def _context(**params):
    return {"params": {"metric_date": None, **params}, "logical_date": pendulum.datetime(2026, 3, 10, tz="UTC")}


def test_the_range_params_are_checked_before_anything_runs(pg_server, conn):
    from airflow.dag_processing.dagbag import DagBag

    assert metric_dates(_context()) == [date(2026, 3, 10)]
    assert metric_dates(_context(metric_date="2026-02-27", end_date="2026-03-01")) == [
        date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)]
    with pytest.raises(Exception, match="end_date=2026-03-01 is before the run's metric_date 2026-03-10"):
        metric_dates(_context(end_date="2026-03-01"))
    with pytest.raises(Exception, match=f"one run builds at most {MAX_RANGE_DAYS}"):
        metric_dates(_context(metric_date="2025-01-01", end_date="2026-03-01"))
    # a real run with a backwards range fails at its first task, saying why, and builds nothing
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    # a DAG of its own: dag.test(run_conf=...) leaves the conf in the in-memory tasks' params
    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("metrics_sales")
    dr = dag.test(run_conf={"metric_date": str(TODAY), "end_date": str(TODAY - timedelta(days=3))})
    assert dr.state == "failed"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["check_sources"] == "failed" and states["publish"] == "upstream_failed"
    assert conn.execute("select to_regclass('entity.metrics_sales')").fetchone()[0] is None
