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


def sqlalchemy_url(conn_id: str = "metrics_warehouse") -> str:
    """SQLAlchemy URL for an Airflow Postgres connection, Unix-socket hosts included
    (the hook's own sqlalchemy_url puts a socket directory into the host part)."""
    from airflow.sdk import BaseHook
    from sqlalchemy.engine import URL

    c = BaseHook.get_connection(conn_id)
    socket = bool(c.host) and c.host.startswith("/")
    url = URL.create(
        "postgresql+psycopg",
        username=c.login or None,
        password=c.password or None,
        host=None if socket else c.host,
        port=None if socket else (c.port or None),
        database=c.schema or "postgres",
        query={"host": c.host} if socket else {},
    )
    return url.render_as_string(hide_password=False)


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


def validate_day(domain: Domain, metric_date: date, schema: str,
                 conn_id: str = "metrics_warehouse") -> ValidationSummary:
    """Run the domain's suite on the rows of `metric_date` in <schema>.<table>."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    started = time.monotonic()
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    # add_sql, not add_postgres: the Postgres source rejects Unix-socket URLs (no host part)
    source = ctx.data_sources.add_sql("warehouse", connection_string=sqlalchemy_url(conn_id))
    asset = source.add_table_asset(domain.table, table_name=domain.table, schema_name=schema)
    batch_def = asset.add_batch_definition_daily("daily", column="metric_date")
    suite = gx.ExpectationSuite(**load_suite_json(domain))
    batch = batch_def.get_batch(batch_parameters={
        "year": metric_date.year, "month": metric_date.month, "day": metric_date.day})
    # COMPLETE: SQL checks return their offending rows (SUMMARY drops them)
    result = batch.validate(suite, result_format={"result_format": "COMPLETE",
                                                  "partial_unexpected_count": 5})
    summary = ValidationSummary(domain.table, metric_date, len(result.results))
    summary.failures = [_describe_failure(r) for r in result.results if not r.success]
    log.info("%s (%.2fs)", summary.describe(), time.monotonic() - started)
    return summary
