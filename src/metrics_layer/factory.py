"""DAG factory. A domain DAG file is two lines: it asks for the DAG of its registry domain.

Parse time reads only the YAML registry: no database, Variable, connection or GX access. Each
task imports what it needs when it runs.

Domain DAG (dag_id = table name), one metric_date = the run's logical date:
    check_sources >> refresh_state >> build >> validate >> publish  (publish emits the Asset)
Fan-in DAG `metrics_unified`, scheduled on the four domain Assets:
    dates_to_build >> build_unified
"""

from __future__ import annotations

import functools
from datetime import date, timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param, chain, task

from metrics_layer.alerts import SlackAlertNotifier
from metrics_layer.registry import Domain, load_registry

WAREHOUSE_CONN_ID = "metrics_warehouse"
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# The fan-in waits for these four domain tables, whether or not their registry files exist yet.
FAN_IN_TABLES = ("metrics_customer_success", "metrics_sales", "metrics_product_analytics",
                 "metrics_marketing")
UNIFIED_DAG_ID = "metrics_unified"


def table_asset(table: str) -> Asset:
    """The Asset a DAG publishes when entity.<table> has a new, validated day."""
    return Asset(name=table, uri=f"postgres://metrics-warehouse:5432/warehouse/entity/{table}",
                 group="metrics")


def default_args(owner: str) -> dict:
    return {
        "owner": owner,
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "on_failure_callback": SlackAlertNotifier(),
    }


def _fail_fast(fn):
    """Bad input is not fixed by retrying: MetricsError becomes AirflowFailException (no
    retries, message kept for the alert). Other errors (network, locks) keep their retries."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from airflow.sdk.exceptions import AirflowFailException

        from metrics_layer.errors import MetricsError

        try:
            return fn(*args, **kwargs)
        except MetricsError as exc:
            raise AirflowFailException(str(exc)) from exc

    return wrapper


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
        schedule="@daily",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=3,
        default_args=default_args(domain.owner),
        tags=["metrics", f"domain:{domain.name}"],
        doc_md=_doc(domain, doc_md or domain.description),
        params={"lookback_days": Param(1, type="integer", minimum=0, maximum=30,
                                       description="also rebuild this many days of state "
                                       "before the metric_date (late-arriving data)")},
    ) as dag:

        @task
        @_fail_fast
        def check_sources():
            """Fail with one clear message if a source table is missing or empty."""
            from metrics_layer import pipeline

            with pipeline.connect(WAREHOUSE_CONN_ID) as conn:
                pipeline.ensure_schema(conn)
                pipeline.check_sources(conn, domain)

        @task
        @_fail_fast
        def refresh_state(ds=None, params=None):
            """Build the compact daily state the rolling windows read."""
            from metrics_layer import pipeline

            d = date.fromisoformat(ds)
            with pipeline.connect(WAREHOUSE_CONN_ID) as conn:
                return {s: [str(x) for x in pipeline.refresh_state(
                            conn, s, d, params["lookback_days"], domain.state_window_days)]
                        for s in domain.states}

        @task
        @_fail_fast
        def build(ds=None):
            """Compute the metric_date into metrics_staging (one transaction)."""
            from metrics_layer import pipeline

            with pipeline.connect(WAREHOUSE_CONN_ID) as conn:
                return pipeline.build_staging(conn, domain, date.fromisoformat(ds))

        @task
        @_fail_fast
        def validate(ds=None):
            """Run the tier-1 expectation suite on the staged day; failure blocks publish."""
            from metrics_layer import pipeline, validation
            from metrics_layer.errors import ValidationFailed

            summary = validation.validate_day(domain, date.fromisoformat(ds),
                                              pipeline.STAGING_SCHEMA, WAREHOUSE_CONN_ID)
            if not summary.success:
                raise ValidationFailed(summary.describe())
            return summary.evaluated

        @task(outlets=[asset])
        @_fail_fast
        def publish(ds=None, run_id=None, outlet_events=None):
            """Swap the validated day into entity (one transaction) and emit the Asset."""
            from metrics_layer import pipeline

            with pipeline.connect(WAREHOUSE_CONN_ID) as conn:
                rows = pipeline.publish(conn, domain, date.fromisoformat(ds), run_id)
            outlet_events[asset].extra = {"metric_date": ds, "rows": rows}
            return rows

        chain(check_sources(), refresh_state(), build(), validate(), publish())
    return dag


def unified_dag(doc_md: str = "") -> DAG:
    unified = table_asset("metrics_unified_domains")
    with DAG(
        dag_id=UNIFIED_DAG_ID,
        schedule=[table_asset(t) for t in FAN_IN_TABLES],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args("metrics-platform"),
        tags=["metrics", "fan-in"],
        doc_md=doc_md,
        params={"metric_dates": Param([], type="array", items={"type": "string", "format": "date"},
                                      description="force a rebuild of these dates; empty = every "
                                      "date a domain published since the last unified build")},
    ) as dag:

        @task
        def dates_to_build(params=None):
            from metrics_layer import pipeline

            with pipeline.connect(WAREHOUSE_CONN_ID) as conn:
                pipeline.ensure_schema(conn)
                if params["metric_dates"]:
                    return sorted(set(params["metric_dates"]))
                return [d.isoformat() for d in pipeline.unified_dates(conn)]

        @task(outlets=[unified])
        @_fail_fast
        def build_unified(dates: list[str], run_id=None, outlet_events=None):
            from metrics_layer import pipeline

            with pipeline.connect(WAREHOUSE_CONN_ID) as conn:  # schema ensured by dates_to_build
                rows = pipeline.build_unified(conn, [date.fromisoformat(d) for d in dates], run_id)
            outlet_events[unified].extra = {"metric_dates": dates, "rows": rows}
            return rows

        build_unified(dates_to_build())
    return dag
