"""The steps of a domain run and of the fan-in as plain functions: the DAG tasks call them one
task each (src/metrics_layer/factory.py), and `run_domain` / `run_fan_in` call them in a row in
this process, without Airflow (the benchmark, and a library user). One sequence, two callers.

Each step opens its own warehouse connections through `pipeline.run` (transient errors retried);
`timings`, when given, receives the seconds each step took.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import date

from metrics_layer import checks, pipeline, validation
from metrics_layer.errors import SourceCheckFailed
from metrics_layer.registry import Domain, derived_domains

log = logging.getLogger(__name__)

UNIFIED_DAG_ID = "metrics_unified"


def label(days: list[date]) -> str:
    return f"{days[0]}" if len(days) == 1 else f"{days[0]}..{days[-1]}"


def source_step(domain: Domain, days: list[date], run_id: str | None,
                conn_id: str = pipeline.WAREHOUSE_CONN_ID) -> list[checks.CheckResult]:
    """Migrate the schema if the registry changed; fail with one clear message if a source
    table is missing or empty; run the source checks on the rows the run reads (an error-severity
    failure raises SourceCheckFailed, naming the rows). Returns every result (warnings included)."""

    def step(conn):
        pipeline.ensure_schema(conn)
        pipeline.check_sources(conn, domain)
        results = checks.source_checks(conn, domain, days)
        checks.record(conn, domain, domain.table, run_id, days[0], results)
        return results

    results = pipeline.run(step, conn_id=conn_id)
    blocking = [r for r in results if r.blocking]
    for r in results:
        if not r.success:
            log.warning("source check: %s", r.describe())
    if blocking:
        raise SourceCheckFailed(
            f"{domain.table} {label(days)}: {len(blocking)} source check(s) failed with severity "
            "error; nothing was built or published, readers still see the last good day:\n"
            + "\n".join(f"  - {r.target}: {r.describe()}" for r in blocking))
    return results


def build_step(domain: Domain, dates: list[date], run_id: str | None,
               conn_id: str = pipeline.WAREHOUSE_CONN_ID, dag_id: str | None = None,
               timings: dict | None = None) -> list[checks.CheckResult]:
    """Compute each metric_date into the run's slice of metrics_staging, then validate the
    slices (the GX suite and the anomaly checks, every result recorded), all on one connection:
    the validation meets a backend that has the slice's table and catalog entries loaded, and a
    retry or a cleared task after a source fix builds again before it checks (a transient error
    rebuilds them all: each build replaces its slice). A failed `error` check raises
    ValidationFailed; the failed `warn` checks are returned."""

    checking: dict = {}

    def step(conn):
        pipeline.build_dates(conn, domain, dates, run_id)
        checking.clear()  # a retry's time is counted once, in the build
        with _timed(checking, "validate"):
            return validation.validate_dates(domain, dates, run_id, conn_id, dag_id=dag_id or domain.table,
                                             conn=conn)

    started = time.perf_counter()
    try:
        return pipeline.run(step, conn_id=conn_id)
    finally:
        if timings is not None:
            # the connection and any retry are the build's; "validate" is its checks alone
            validate = checking.get("validate", 0.0)
            timings["build"] = timings.get("build", 0.0) + time.perf_counter() - started - validate
            timings["validate"] = timings.get("validate", 0.0) + validate


def overview_step(run_id: str, forced: list[date], context=None,
                  conn_id: str = pipeline.WAREHOUSE_CONN_ID) -> dict[str, list[str]]:
    """Build the derived tables (the company overview) for the dates a domain published since
    (plus `forced`): stage and validate with its tier-1 suite (one connection), then publish (restatements
    included); a failed check raises and leaves the last good overview in place. With an Airflow
    `context`, warnings and recoveries are alerted. Returns {table: [dates built]}."""
    from metrics_layer import alerts

    built = {}
    for domain in derived_domains():

        def stage(conn, domain=domain):
            pipeline.ensure_schema(conn)
            pipeline.check_sources(conn, domain)
            versions = pipeline.derived_versions(conn, domain, forced)
            for d in versions:
                pipeline.build_staging(conn, domain, d, run_id)
            validation.validate_dates(domain, list(versions), run_id, conn_id, dag_id=UNIFIED_DAG_ID, conn=conn)
            return versions

        versions = pipeline.run(stage, conn_id=conn_id)
        if not versions:
            continue
        pipeline.run(pipeline.publish, domain, list(versions), run_id, conn_id=conn_id)
        pipeline.run(pipeline.record_derived, domain, versions, run_id, conn_id=conn_id)
        if context is not None:
            alerts.after_publish(domain, list(versions), run_id, UNIFIED_DAG_ID, context)
        built[domain.table] = [d.isoformat() for d in versions]
    return built


def unified_step(run_id: str, forced: list[date], conn_id: str = pipeline.WAREHOUSE_CONN_ID) -> dict:
    """Rebuild the stale (domain, metric_date) slices of metrics_api (and the view
    metrics_unified_domains)."""

    def step(conn):
        pipeline.ensure_schema(conn)
        return pipeline.build_unified(conn, run_id, forced)

    return pipeline.run(step, conn_id=conn_id)


@contextlib.contextmanager
def _timed(timings: dict | None, name: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


def run_domain(domain: Domain, days: list[date], run_id: str, fresh_after=None,
               conn_id: str = pipeline.WAREHOUSE_CONN_ID, timings: dict | None = None) -> list[date]:
    """A domain DAG run for `days` (one date or a range) in this process: source checks, state,
    build, validation, publication, in the DAG's order (no alerts: there is no Airflow context).
    Returns the metric_dates published (late-data republications included)."""
    with _timed(timings, "check_sources"):
        source_step(domain, days, run_id, conn_id)
    with _timed(timings, "refresh_state"):
        dates = pipeline.run(pipeline.refresh_states, domain, days, None, fresh_after, conn_id=conn_id)
    build_step(domain, dates, run_id, conn_id, timings=timings)  # "build" and "validate"
    with _timed(timings, "publish"):
        pipeline.run(pipeline.publish, domain, dates, run_id, pipeline.late_data_reasons(dates, days),
                     conn_id=conn_id)
    return dates


def run_fan_in(run_id: str, forced: list[date] | None = None, conn_id: str = pipeline.WAREHOUSE_CONN_ID,
               timings: dict | None = None) -> dict:
    """The fan-in DAG run in this process: the company overview, then metrics_api (and the view
    metrics_unified_domains). Returns the rebuild summary."""
    with _timed(timings, "overview"):
        overview_step(run_id, forced or [], conn_id=conn_id)
    with _timed(timings, "unified"):
        return unified_step(run_id, forced or [], conn_id)
