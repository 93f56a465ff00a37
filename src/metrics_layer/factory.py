"""DAG factory. A domain DAG file is two lines: it asks for the DAG of its registry domain.

Parse time reads only the YAML registry: no database, Variable, connection or GX access. Each
task imports what it needs when it runs.

Domain DAG (dag_id = table name), one metric_date per run (see metrics_layer.runctx):
    check_sources >> refresh_state >> build_and_validate >> publish  (publish emits the Asset)
Fan-in DAG `metrics_unified`, scheduled on ANY domain Asset, rebuilds only the stale
(domain, metric_date) slices: one domain failing never freezes the other three.

Errors: a permanent one (bad data, a missing database, role or relation, bad SQL) fails the task
at once and alerts; a transient one (refused connection, timeout, deadlock, lock timeout) is
retried inside the task with backoff, then by Airflow (`retries`, exponential backoff).
"""

from __future__ import annotations

import functools
import logging
from datetime import date, datetime, timedelta

import pendulum
from airflow.sdk import DAG, Asset, AssetAny, Param, get_current_context, task
from airflow.timetables.trigger import CronTriggerTimetable

from metrics_layer import alerts
from metrics_layer.alerts import SlackAlertNotifier
from metrics_layer.registry import Domain, derived_domains, load_registry
from metrics_layer.runctx import DATE_PATTERN, MAX_RANGE_DAYS

log = logging.getLogger(__name__)

WAREHOUSE_CONN_ID = "metrics_warehouse"
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# The fan-in follows these four domain tables, whether or not their registry files exist yet.
FAN_IN_TABLES = ("metrics_customer_success", "metrics_sales", "metrics_product_analytics",
                 "metrics_marketing")
UNIFIED_DAG_ID = "metrics_unified"
# Every day at 00:00 UTC, logical date = that day, whatever [scheduler] create_cron_data_intervals
# says (an explicit timetable is not affected by it).
DAILY = CronTriggerTimetable("0 0 * * *", timezone="UTC")
TASK_TIMEOUT = timedelta(hours=1)


def table_asset(table: str) -> Asset:
    """The Asset a DAG publishes when entity.<table> has a new, validated day."""
    return Asset(name=table, uri=f"postgres://metrics-warehouse:5432/warehouse/entity/{table}",
                 group="metrics")


def default_args(owner: str) -> dict:
    return {
        "owner": owner,
        # only transient errors reach these retries: permanent ones raise AirflowFailException
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=15),
        "execution_timeout": TASK_TIMEOUT,
        "on_failure_callback": SlackAlertNotifier(),
    }


def _task_errors(fn):
    """Permanent errors fail at once (AirflowFailException: no retries, the message is what
    the alert shows); transient ones are re-raised for Airflow's retries, with a log line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from metrics_layer.errors import MetricsError, describe, is_transient

        try:
            return fn(*args, **kwargs)
        except AirflowException:
            raise
        except Exception as exc:
            if is_transient(exc):
                log.warning("transient error, Airflow retries this task with backoff: %s", describe(exc))
                raise
            if isinstance(exc, MetricsError):
                raise AirflowFailException(str(exc)) from exc
            raise AirflowFailException(
                f"{describe(exc)}. A permanent error (missing database, role, relation or column, "
                "failed authentication, bad SQL, a bug): not retried; fix it and rerun.") from exc

    return wrapper


def _run_facts():
    """(context, metric_dates, run_id) of the running task: one date, or a range."""
    from metrics_layer.runctx import metric_dates

    context = get_current_context()
    return context, metric_dates(context), context["run_id"]


def _doc(domain: Domain, intro: str) -> str:
    rows = "\n".join(
        f"| `{m.name}` | {m.tier} | {m.unit} | {m.window} | "
        f"{m.status if m.implemented else 'placeholder: ' + (m.requires or '')} |"
        for m in sorted(domain.metrics, key=lambda m: (m.tier, m.name))
    )
    return (
        f"{intro.strip()}\n\n**Table** `entity.{domain.table}`: {domain.grain}.\n\n"
        f"**As of**: {domain.as_of}\n\n**Sources**: {', '.join(domain.sources)}\n\n"
        f"**Owner**: {domain.owner}. Definitions: `include/registry/{domain.path.name}` and "
        "`docs/metrics.md`.\n\n| metric | tier | unit | window | status |\n|---|---|---|---|---|\n"
        f"{rows}\n"
    )


def domain_dag(domain_name: str, doc_md: str = "") -> DAG:
    domain = load_registry()[domain_name]
    asset = table_asset(domain.table)

    with DAG(
        dag_id=domain.table,
        schedule=DAILY,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=3,
        default_args=default_args(domain.owner),
        tags=["metrics", f"domain:{domain.name}"],
        doc_md=_doc(domain, doc_md or domain.description),
        params={
            "lookback_days": Param(domain.lookback_days, type="integer", minimum=0,
                                   maximum=domain.state_window_days,
                                   description="rebuild this many days of state before the "
                                   "metric_date (late-arriving rows) and republish the published "
                                   "dates whose window saw a change"),
            "metric_date": Param(None, type=["null", "string"], pattern=DATE_PATTERN,
                                 description="build this date (YYYY-MM-DD) instead of the run's "
                                 "logical date; a run without a logical date builds its run date"),
            "end_date": Param(None, type=["null", "string"], pattern=DATE_PATTERN,
                              description="build every date from the run's metric_date through "
                              "this one (YYYY-MM-DD) in this one run: the state once, one "
                              f"validation, one publication (a backfill; at most {MAX_RANGE_DAYS} days)"),
            "state_fresh_after": Param(None, type=["null", "string"],
                                       description="for a historical date, rebuild the state days "
                                       "of its window built before this time (default: when the "
                                       "run was queued)"),
        },
    ) as dag:

        @task
        @_task_errors
        def check_sources():
            """Migrate the schema if the registry changed; fail with one clear message if a
            source table is missing or empty; run the source checks on the rows this run reads
            (include/contract/source_checks.yaml): an error-severity failure stops the day here,
            naming the rows; warnings are stored and alerted after publishing."""
            from metrics_layer import runner

            _, days, run_id = _run_facts()
            runner.source_step(domain, days, run_id, WAREHOUSE_CONN_ID)
            return [d.isoformat() for d in days]

        @task
        @_task_errors
        def refresh_state():
            """Build the compact daily state the rolling windows read: missing days and the
            lookback (late rows); for a historical date, the window's days built before the run
            was requested. Returns the metric_dates to build: D and every published earlier date
            whose window saw a changed state day (late data is republished, and restated)."""
            from metrics_layer import pipeline

            context, days, _ = _run_facts()
            params = context["params"]
            dag_run = context["dag_run"]
            fresh = params.get("state_fresh_after")
            fresh_after = (datetime.fromisoformat(fresh) if fresh
                           else getattr(dag_run, "queued_at", None))
            dates = pipeline.run(pipeline.refresh_states, domain, days, params["lookback_days"],
                                 fresh_after)
            return [d.isoformat() for d in dates]

        @task
        @_task_errors
        def build_and_validate(dates: list[str]):
            """Compute each metric_date into this run's slice of metrics_staging, then run the
            tier-1 expectation suite and the anomaly checks on every slice, on the same
            connection. Any `error` failure blocks the publication of all of them and fails the
            task at once; clearing it after a source fix builds again before it checks."""
            from metrics_layer import runner

            _, _, run_id = _run_facts()
            runner.build_step(domain, [date.fromisoformat(d) for d in dates], run_id, WAREHOUSE_CONN_ID,
                              dag_id=domain.table)
            return dates

        @task(outlets=[asset])
        @_task_errors
        def publish(dates: list[str], outlet_events=None):
            """Swap the validated slices into entity (one transaction), record restatements,
            and emit the Asset."""
            from metrics_layer import pipeline

            _, run_days, run_id = _run_facts()
            days = [date.fromisoformat(d) for d in dates]
            rows = pipeline.run(pipeline.publish, domain, days, run_id,
                                pipeline.late_data_reasons(days, run_days))
            outlet_events[asset].extra = {"metric_date": run_days[0].isoformat(), "metric_dates": dates,
                                          "rows": rows}
            # warnings of this run, and the recovery of dates that alerted before (never raises)
            alerts.after_publish(domain, days, run_id, domain.table, get_current_context())
            return rows

        check_sources() >> (dates := refresh_state())
        publish(build_and_validate(dates))
    return dag


def unified_dag(doc_md: str = "") -> DAG:
    unified = table_asset("metrics_unified_domains")
    with DAG(
        dag_id=UNIFIED_DAG_ID,
        # any domain publishing is enough: the run rebuilds the slices that are stale
        schedule=AssetAny(*(table_asset(t) for t in FAN_IN_TABLES)),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args("metrics-platform"),
        tags=["metrics", "fan-in"],
        doc_md=doc_md,
        params={"metric_dates": Param([], type="array", items={"type": "string", "pattern": DATE_PATTERN},
                                      description="also rebuild every domain's slice of these dates; "
                                      "empty = only the slices a domain republished since")},
    ) as dag:

        overview_assets = [table_asset(d.table) for d in derived_domains()]

        @task(outlets=overview_assets)
        @_task_errors
        def build_overview(outlet_events=None):
            """Build the derived tables (the company overview) for the dates a domain published
            since: stage, validate with its tier-1 suite, then publish (restatements included);
            a failed check leaves the last good overview in place and alerts."""
            from metrics_layer import runner

            context = get_current_context()
            forced = [date.fromisoformat(d) for d in context["params"]["metric_dates"]]
            built = runner.overview_step(context["run_id"], forced, context, WAREHOUSE_CONN_ID)
            for table, days in built.items():
                outlet_events[table_asset(table)].extra = {"metric_dates": days}
            return built

        # the unified table follows the domains even when the overview failed its checks
        @task(outlets=[unified], trigger_rule="all_done")
        @_task_errors
        def build_unified(outlet_events=None):
            """Rebuild the stale (domain, metric_date) slices of metrics_api (and of the view
            metrics_unified_domains, the Asset this task emits)."""
            from metrics_layer import runner

            context = get_current_context()
            forced = [date.fromisoformat(d) for d in context["params"]["metric_dates"]]
            summary = runner.unified_step(context["run_id"], forced, WAREHOUSE_CONN_ID)
            outlet_events[unified].extra = {"rebuilt": summary}
            return summary

        build_overview() >> build_unified()
    return dag
