"""Validate one metric_date of a metrics table against its tier-1 expectation suite with Great
Expectations Core (imported inside the function: a top-level GX import costs seconds of DAG parse
time). Suites are plain JSON under include/expectations/."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import date

from metrics_layer import checks, sqlrender
from metrics_layer.checks import CheckResult
from metrics_layer.paths import EXPECTATIONS_DIR
from metrics_layer.registry import Domain

log = logging.getLogger(__name__)


@dataclass
class Failure:
    expectation: str
    column: str | None
    detail: str
    severity: str = "error"
    check: str = ""


@dataclass
class ValidationSummary:
    table: str
    metric_date: date
    evaluated: int
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failures(self) -> list[Failure]:
        """The failed checks, as metrics_ops.validation_log and the UI page show them."""
        return [Failure(r.details.get("type", r.check_kind), r.metric, r.describe(), r.severity,
                        r.check_name) for r in self.results if not r.success]

    @property
    def success(self) -> bool:
        """No blocking failure: warnings alone let the day publish."""
        return not any(f.severity == "error" for f in self.failures)

    @property
    def warnings(self) -> list[Failure]:
        return [f for f in self.failures if f.severity != "error"]

    def describe(self) -> str:
        if not self.failures:
            return f"{self.table} {self.metric_date}: all {self.evaluated} checks passed"
        errors = [f for f in self.failures if f.severity == "error"]
        head = (f"{self.table} {self.metric_date}: {len(errors)} of {self.evaluated} checks failed "
                "with severity error; the day was not published" if errors else
                f"{self.table} {self.metric_date}: {len(self.failures)} warning(s) of "
                f"{self.evaluated} checks; the day publishes")
        lines = [head + ":"]
        lines += [f"  - [{f.severity}] {f.check}: {f.detail}" for f in errors + self.warnings]
        return "\n".join(lines)


# GX expectation types that judge a distribution rather than each value: warn by default
DISTRIBUTION_TYPES = ("expect_column_mean_to_be_between", "expect_column_median_to_be_between",
                      "expect_column_stdev_to_be_between", "expect_column_quantile_values_to_be_between",
                      "expect_column_kl_divergence_to_be_less_than",
                      "expect_column_proportion_of_unique_values_to_be_between",
                      "expect_column_unique_value_count_to_be_between",
                      "expect_column_sum_to_be_between", "expect_column_min_to_be_between",
                      "expect_column_max_to_be_between")
VALUE_TYPES = ("expect_column_values_to_be_between", "expect_column_values_to_not_be_null",
               "expect_column_values_to_be_in_set")
_SUFFIX = {"expect_column_values_to_not_be_null": "not_null", "expect_column_values_to_be_between": "in_range",
           "expect_column_values_to_be_in_set": "in_set", "expect_compound_columns_to_be_unique": "unique",
           "expect_column_values_to_be_unique": "unique"}


def check_name(expectation: dict) -> str:
    """A check's stable name (the registry's `checks.severity` keys and the results table use
    it): `meta.check` when the suite gives one (required for SQL checks), else column + kind."""
    meta = expectation.get("meta") or {}
    if meta.get("check"):
        return meta["check"]
    kw = expectation.get("kwargs", {})
    typ = expectation["type"]
    column = kw.get("column") or "_".join(kw.get("column_list", [])) or "table"
    suffix = _SUFFIX.get(typ) or re.sub(r"^expect_(column_values_to_|column_|table_|compound_columns_to_)?", "", typ)
    return f"{column}_{suffix}"


def default_severity(domain: Domain, expectation: dict) -> str:
    """error: integrity of tier-1 metrics, keys and cross-checks; warn: distribution checks and
    checks of tier-2/3 metrics. The suite's meta.severity, then the registry's
    checks.severity, override it."""
    meta = expectation.get("meta") or {}
    if meta.get("severity"):
        return meta["severity"]
    if expectation["type"] in DISTRIBUTION_TYPES:
        return "warn"
    column = expectation.get("kwargs", {}).get("column")
    tiers = {m.name: m.tier for m in domain.metrics}
    if column in tiers and tiers[column] != "tier_1":
        return "warn"
    return "error"


def severity(domain: Domain, expectation: dict) -> str:
    return checks.severity_of(domain, check_name(expectation), default_severity(domain, expectation))


def uncovered_tier_1(domain: Domain, suite: dict) -> list[str]:
    """Implemented tier-1 metrics that no check of `suite` actually tests: each needs a value
    check on its column (a range or set, not only not-null) or an SQL cross-check whose WHERE
    clause uses it. Only checks whose severity is error count."""
    tested: set[str] = set()
    for e in suite["expectations"]:
        if severity(domain, e) != "error":
            continue
        kw = e.get("kwargs", {})
        if e["type"] in ("expect_column_values_to_be_between", "expect_column_values_to_be_in_set"):
            if kw.get("min_value") is not None or kw.get("max_value") is not None or kw.get("value_set"):
                tested.add(kw.get("column"))
        elif e["type"] == "unexpected_rows_expectation":
            where = re.split(r"\bwhere\b", kw.get("unexpected_rows_query", ""), maxsplit=1, flags=re.I)
            if len(where) == 2:
                tested |= {m.name for m in domain.metrics if re.search(rf"\b{m.name}\b", where[1])}
    return [m.name for m in domain.implemented if m.tier == "tier_1" and m.name not in tested]


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


def _row_text(row) -> str:
    return ", ".join(f"{k}={v}" for k, v in (row.items() if isinstance(row, dict) else enumerate(row)))


def _check_result(domain: Domain, res) -> tuple[CheckResult, list]:
    """The stored result of one expectation, and the ids of the offending entities (names are
    looked up afterwards): what was observed, which rows, what was expected."""
    cfg = res.expectation_config
    kwargs = dict(cfg.kwargs)
    expectation = {"type": cfg.type, "kwargs": kwargs, "meta": cfg.meta or {}}
    name, sev = check_name(expectation), severity(domain, expectation)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("batch_id", "result_format", "unexpected_rows_query")}
    column = kwargs.pop("column", None)
    column_list = kwargs.pop("column_list", None)
    r = res.result or {}
    observed, ids, rows = [], [], []
    if cfg.type == "unexpected_rows_expectation":
        # a SQL check: its description says what it guards; show the offending rows, not the SQL
        rows = (r.get("details") or {}).get("unexpected_rows") or []
        observed.append(f"{r.get('observed_value', len(rows))} offending row(s)")
        ids = [row.get(domain.id_column) for row in rows if isinstance(row, dict) and domain.id_column in row]
    else:
        if "observed_value" in r:
            observed.append(f"{r['observed_value']}")
        if r.get("unexpected_count"):
            observed.append(f"{r['unexpected_count']} of {r.get('element_count', '?')} rows unexpected")
        sample = r.get("partial_unexpected_list") or []
        if sample:
            observed.append("values " + ", ".join(str(v) for v in sample[:5]))
        ids = [i.get(domain.id_column) for i in (r.get("unexpected_index_list") or [])
               if isinstance(i, dict)]
    for message in _exception_messages(res.exception_info):
        observed.append(f"the check itself errored: {message}")
    expected = cfg.description or ""
    if kwargs:
        expected = (expected + "; " if expected else "") + ", ".join(f"{k}={v}" for k, v in kwargs.items())
    if column:
        expected = f"{column}: {expected}"
    elif column_list:
        expected = f"{', '.join(column_list)}: {expected or 'unique'}"
    result = CheckResult(
        "expectation", name, domain.table, sev, bool(res.success), metric=column,
        observed="; ".join(observed) or ("passed" if res.success else "failed"),
        expected=expected or None,
        details={"type": cfg.type, "rows": [_row_text(x) for x in rows[:checks.MAX_ENTITIES]]})
    return result, list(dict.fromkeys(i for i in ids if i is not None))[:checks.MAX_ENTITIES]


def _name_entities(domain: Domain, results: list[tuple[CheckResult, list]], relation: str, where: str,
                   conn_id: str, conn=None) -> None:
    """Fill each failed result's `entity` with the names of its offending entities (the
    domain's name column, else the id), or with its first offending rows."""
    from metrics_layer import pipeline

    wanted = sorted({i for r, ids in results if not r.success for i in ids}, key=str)
    names: dict = {}
    if wanted and domain.name_column:
        with (contextlib.nullcontext(conn) if conn is not None else pipeline.connect(conn_id)) as c, \
                c.cursor() as cur:
            cur.execute(f"select {domain.id_column}, {domain.name_column} from {relation} "  # noqa: S608
                        f"where {where} and {domain.id_column} = any(%s)", (wanted,))
            names = dict(cur.fetchall())
    for r, ids in results:
        if r.success:
            continue
        if ids:
            r.entity = ", ".join(f"{names[i]} ({domain.id_column} {i})" if i in names
                                 else f"{domain.id_column} {i}" for i in ids)
        elif r.details.get("rows"):
            r.entity = "; ".join(r.details["rows"])


def quiet_gx_logging() -> None:
    """GX logs ~200 "Skipping registering function" lines at import; keep only its warnings.
    Must run before `import great_expectations`."""
    for name in ("great_expectations", "great_expectations._docs_decorators"):
        logging.getLogger(name).setLevel(logging.WARNING)


def validation_engine() -> str:
    """The engine a suite runs on unless a caller names one [METRICS_VALIDATION_ENGINE: sql
    (default: one PostgreSQL statement whenever the suite compiles) or gx]."""
    return os.environ.get("METRICS_VALIDATION_ENGINE", "sql")


def validate_day(domain: Domain, metric_date: date, run_id: str | None = None,
                 conn_id: str = "metrics_warehouse", schema: str = "metrics_staging",
                 engine: str | None = None, conn=None) -> ValidationSummary:
    """Run the domain's suite on the run's staged slice of `metric_date` (in <schema>.<table>;
    `schema="entity"` validates a published day instead).

    engine: "sql" evaluates the suite in one PostgreSQL statement (metrics_layer.suite_sql, the
    default whenever the suite compiles), "gx" runs it through Great Expectations; the default
    comes from METRICS_VALIDATION_ENGINE (sql). `conn`: an open connection to use (SQL engine)."""
    from metrics_layer import pipeline, suite_sql

    started = time.monotonic()
    # literals only from validated values: a registry identifier, an ISO date, a hex stage id
    where = f"metric_date = date '{metric_date.isoformat()}'"
    if schema == pipeline.STAGING_SCHEMA:
        where += f" and stage_id = '{pipeline.stage_key(run_id)}'"
    relation = f"{schema}.{domain.table}"
    suite = load_suite_json(domain)
    engine = engine or validation_engine()
    compiled = suite_sql.compile_suite(domain, suite, relation, where) if engine == "sql" else None
    if compiled is not None:
        with contextlib.nullcontext(conn) if conn is not None else pipeline.connect(conn_id) as c:
            results = suite_sql.evaluate(c, compiled)
    else:
        engine = "gx"
        results = _gx_results(domain, suite, relation, where, conn_id)
    pairs = [_check_result(domain, r) for r in results]
    _name_entities(domain, pairs, relation, where, conn_id, conn)
    summary = ValidationSummary(domain.table, metric_date, len(results), results=[r for r, _ in pairs])
    log.info("%s (%s, %.2fs)", summary.describe(), engine, time.monotonic() - started)
    return summary


def _gx_results(domain: Domain, suite: dict, relation: str, where: str, conn_id: str) -> list:
    """The suite's results from Great Expectations itself (one ephemeral context)."""
    quiet_gx_logging()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_sql("warehouse", connection_string="postgresql+psycopg://",
                                      kwargs=_engine_kwargs(conn_id))
    asset = source.add_query_asset(domain.table, query=f"select * from {relation} where {where}")  # noqa: S608
    batch = asset.add_batch_definition_whole_table("day").get_batch()
    # COMPLETE: SQL checks return their offending rows and map checks the offending ids
    result = batch.validate(gx.ExpectationSuite(**suite),
                            result_format={"result_format": "COMPLETE", "partial_unexpected_count": 5,
                                           "unexpected_index_column_names": [domain.id_column]})
    return list(result.results)


def validate_dates(domain: Domain, dates: list[date], run_id: str | None,
                   conn_id: str = "metrics_warehouse", dag_id: str | None = None,
                   conn=None) -> list[CheckResult]:
    """Check the run's staged slice of every date: the GX suite, then the anomaly checks.
    Every result goes to metrics_ops.check_results, the outcome to metrics_ops.validation_log.
    A failed `error` check on any date raises ValidationFailed naming every failure, so none of
    the dates is published; failed `warn` checks are returned (the caller alerts them and
    publishes).

    `conn`: the connection that staged the dates (the build task validates what it built on
    its own connection; the caller retries transient errors); without it, one new connection
    for all the dates, transient errors retried here."""
    from metrics_layer import pipeline
    from metrics_layer.errors import ValidationFailed

    stage = pipeline.stage_key(run_id)

    def one(conn, d: date) -> ValidationSummary:
        summary = validate_day(domain, d, run_id, conn_id, conn=conn)
        anomalies = checks.anomaly_checks(conn, domain, d, stage)
        summary.results += anomalies
        summary.evaluated += len(anomalies)
        checks.record(conn, domain, dag_id or domain.table, run_id, d, summary.results, outcome=summary)
        return summary

    def check(conn) -> list[ValidationSummary]:
        # the dates of a range run shared out over the build connections (the SQL engine: one
        # statement a date; Great Expectations runs one date after another); a transient error
        # retries them all: recording replaces what an earlier try stored
        workers = min(pipeline.build_workers(), len(dates)) if validation_engine() == "sql" else 1
        return sorted(pipeline.share_out(conn, list(dates), workers, one, f"validate-{domain.name}"),
                      key=lambda s: s.metric_date)

    failed, warnings = [], []
    for summary in check(conn) if conn is not None else pipeline.run(check, conn_id=conn_id):
        warnings += [r for r in summary.results if not r.success and not r.blocking]
        if not summary.success:
            failed.append(summary.describe())
        elif summary.failures:
            log.warning(summary.describe())
    if failed:
        raise ValidationFailed("\n".join(failed))
    return warnings
