"""Validate one metric_date of a metrics table against its tier-1 expectation suite with Great
Expectations Core (imported inside the function: a top-level GX import costs seconds of DAG parse
time). Suites are plain JSON under include/expectations/."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date

from metrics_layer import sqlrender
from metrics_layer.paths import EXPECTATIONS_DIR
from metrics_layer.registry import Domain

log = logging.getLogger(__name__)


@dataclass
class Failure:
    expectation: str
    column: str | None
    detail: str


@dataclass
class ValidationSummary:
    table: str
    metric_date: date
    evaluated: int
    failures: list[Failure] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        if self.success:
            return f"{self.table} {self.metric_date}: all {self.evaluated} expectations passed"
        lines = [f"{self.table} {self.metric_date}: {len(self.failures)} of {self.evaluated} "
                 "tier-1 expectations failed; the day was not published:"]
        lines += [f"  - {f.expectation}({f.column or ''}): {f.detail}" for f in self.failures]
        return "\n".join(lines)


def load_suite_json(domain: Domain) -> dict:
    """The domain's suite; `{source_schema}` in SQL-based expectations names the schema of the
    source tables (METRICS_SOURCE_SCHEMA, default raw), `{batch}` is left for GX."""
    text = (EXPECTATIONS_DIR / domain.expectation_suite).read_text()
    return json.loads(text.replace("{source_schema}", sqlrender.source_schema()))


def _engine_kwargs(conn_id: str) -> dict:
    """SQLAlchemy engine arguments whose connections come from the Airflow hook itself, so every
    extra of the connection (socket directory in `host`, sslmode, sslrootcert, options ...) is
    kept and no password is ever written into a URL; each connection gets the layer's session
    settings (UTC, search_path, timeouts)."""
    from sqlalchemy.pool import NullPool

    from metrics_layer import pipeline

    def creator():
        return pipeline.connect(conn_id, autocommit=False)

    # NullPool: every connection is closed when GX is done with it, none lingers in a pool
    return {"creator": creator, "poolclass": NullPool}


def _exception_messages(info) -> list[str]:
    """GX reports a check that could not run either as one {raised_exception, exception_message}
    dict or as such dicts keyed by metric; first line of each message, deduplicated."""
    if not info:
        return []
    found = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    messages = [str(i.get("exception_message", "")).splitlines()[0] for i in found if i.get("raised_exception")]
    return list(dict.fromkeys(m for m in messages if m))


def _describe_failure(res) -> Failure:
    """One line an on-call person can act on: what was observed, which rows, what was expected."""
    cfg = res.expectation_config
    kwargs = dict(cfg.kwargs)
    column = kwargs.pop("column", None) or (",".join(kwargs.pop("column_list", [])) or None)
    kwargs.pop("batch_id", None)
    kwargs.pop("result_format", None)
    r = res.result or {}
    parts = []
    if cfg.type == "unexpected_rows_expectation":
        # a SQL check: its description says what it guards; show the offending rows, not the SQL
        kwargs.pop("unexpected_rows_query", None)
        if cfg.description:
            parts.append(cfg.description)
        rows = (r.get("details") or {}).get("unexpected_rows") or []
        parts.append(f"{r.get('observed_value', len(rows))} offending row(s)")
        if rows:
            parts.append("e.g. " + "; ".join(
                ", ".join(f"{k}={v}" for k, v in (row.items() if isinstance(row, dict) else enumerate(row)))
                for row in rows[:3]))
    elif "observed_value" in r:
        parts.append(f"observed {r['observed_value']}")
    if r.get("unexpected_count"):
        parts.append(f"{r['unexpected_count']} of {r.get('element_count', '?')} rows unexpected")
    sample = r.get("partial_unexpected_list") or []
    if sample:
        parts.append("e.g. " + ", ".join(str(v) for v in sample[:5]))
    for message in _exception_messages(res.exception_info):
        parts.append(f"the check itself errored: {message}")
    if kwargs:
        parts.append("expected " + ", ".join(f"{k}={v}" for k, v in kwargs.items()))
    return Failure(cfg.type, column, "; ".join(parts) or "failed")


def quiet_gx_logging() -> None:
    """GX logs ~200 "Skipping registering function" lines at import; keep only its warnings.
    Must run before `import great_expectations`."""
    for name in ("great_expectations", "great_expectations._docs_decorators"):
        logging.getLogger(name).setLevel(logging.WARNING)


def validate_day(domain: Domain, metric_date: date, run_id: str | None = None,
                 conn_id: str = "metrics_warehouse", schema: str = "metrics_staging") -> ValidationSummary:
    """Run the domain's suite on the run's staged slice of `metric_date` (in <schema>.<table>;
    `schema="entity"` validates a published day instead)."""
    from metrics_layer import pipeline

    quiet_gx_logging()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    started = time.monotonic()
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_sql("warehouse", connection_string="postgresql+psycopg://",
                                      kwargs=_engine_kwargs(conn_id))
    # literals only from validated values: a registry identifier, an ISO date, a hex stage id
    where = f"metric_date = date '{metric_date.isoformat()}'"
    if schema == pipeline.STAGING_SCHEMA:
        where += f" and stage_id = '{pipeline.stage_key(run_id)}'"
    asset = source.add_query_asset(domain.table, query=f"select * from {schema}.{domain.table} where {where}")  # noqa: S608
    batch = asset.add_batch_definition_whole_table("day").get_batch()
    suite = gx.ExpectationSuite(**load_suite_json(domain))
    # COMPLETE: SQL checks return their offending rows (SUMMARY drops them)
    result = batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                  "partial_unexpected_count": 5})
    summary = ValidationSummary(domain.table, metric_date, len(result.results))
    summary.failures = [_describe_failure(r) for r in result.results if not r.success]
    log.info("%s (%.2fs)", summary.describe(), time.monotonic() - started)
    return summary


def validate_dates(domain: Domain, dates: list[date], run_id: str | None,
                   conn_id: str = "metrics_warehouse") -> int:
    """Validate the run's staged slice of every date (transient errors retried), record each
    outcome in metrics_ops.validation_log, and raise ValidationFailed naming every failure, so
    none of the dates is published. Returns the expectations evaluated."""
    from metrics_layer import pipeline
    from metrics_layer.errors import ValidationFailed

    failed, evaluated = [], 0
    for d in dates:
        for attempt in pipeline.transient_retrying("validate"):
            with attempt:
                summary = validate_day(domain, d, run_id, conn_id)
        pipeline.run(pipeline.record_validation, domain, d, run_id, summary, conn_id=conn_id)
        evaluated += summary.evaluated
        if not summary.success:
            failed.append(summary.describe())
    if failed:
        raise ValidationFailed("\n".join(failed))
    return evaluated

