"""DAG policy tests: every DAG imports, is owned, tagged, retried and alerting, parses fast, and
has the task graph we planned (a snapshot: an unplanned change shows up in review)."""

from __future__ import annotations

from metrics_layer.alerts import SlackAlertNotifier
from metrics_layer.factory import FAN_IN_TABLES
from metrics_layer.registry import source_domains

DOMAIN_GRAPH = {
    "check_sources": {"refresh_state"},
    "refresh_state": {"build_and_validate"},
    "build_and_validate": {"publish"},
    "publish": set(),
}
UNIFIED_GRAPH = {"build_overview": {"build_unified"}, "build_unified": set()}


def _graph(dag) -> dict[str, set[str]]:
    return {t.task_id: set(t.downstream_task_ids) for t in dag.tasks}


def test_every_dag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    # one DAG per source domain; the derived company overview is built by the fan-in
    expected = {d.table for d in source_domains()} | {"metrics_unified"}
    assert set(dagbag.dag_ids) == expected


def test_every_dag_has_owner_tags_retries_callback_and_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), (dag_id, task.task_id)
            assert task.retries >= 1, (dag_id, task.task_id)
            # a hung statement or lock wait never holds a worker slot forever
            assert task.execution_timeout is not None, (dag_id, task.task_id)
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(c, SlackAlertNotifier) for c in callbacks), (dag_id, task.task_id)


def test_each_dag_file_parses_well_under_a_second(dagbag):
    stats = {s.file: s.duration for s in dagbag.dagbag_stats}
    assert len(stats) == len(dagbag.dag_ids)
    for file, duration in stats.items():
        seconds = duration.total_seconds() if hasattr(duration, "total_seconds") else duration
        assert seconds < 0.5, f"{file} took {seconds:.2f}s to parse"


def test_domain_dags_are_daily_and_publish_their_asset(dagbag):
    for domain in source_domains():
        dag = dagbag.get_dag(domain.table)
        assert _graph(dag) == DOMAIN_GRAPH
        # an explicit timetable: 00:00 UTC daily, logical date = the day it runs, independent of
        # [scheduler] create_cron_data_intervals
        assert type(dag.timetable).__name__ == "CronTriggerTimetable"
        assert dag.timetable.summary == "0 0 * * *"
        assert dag.owner == domain.owner
        outlets = dag.get_task("publish").outlets
        assert [o.name for o in outlets] == [domain.table]


def test_unified_dag_runs_when_any_domain_asset_is_published(dagbag):
    dag = dagbag.get_dag("metrics_unified")
    assert _graph(dag) == UNIFIED_GRAPH
    condition = dag.timetable.asset_condition
    names = {a.name for a in condition.objects}
    assert type(condition).__name__ == "AssetAny"
    assert names == set(FAN_IN_TABLES) == {
        "metrics_customer_success", "metrics_sales", "metrics_product_analytics", "metrics_marketing"}
    assert [o.name for o in dag.get_task("build_unified").outlets] == ["metrics_unified_domains"]
    assert [o.name for o in dag.get_task("build_overview").outlets] == ["metrics_company_overview"]
    # the unified table follows the domains even when the overview fails its checks
    assert dag.get_task("build_unified").trigger_rule == "all_done"
