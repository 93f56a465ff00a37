"""Check results, source checks and anomaly checks.

Every check of a run (GX expectations on the staged day, the anomaly checks below, the source
checks of include/contract/source_checks.yaml) becomes one `CheckResult`, stored in
metrics_ops.check_results. Its severity decides what a failure does: `error` blocks the
publication of the day, `warn` is alerted and the day publishes.

Source checks run in SQL on the rows a run reads; anomaly checks compare a metric's daily
aggregate with the same weekday of the previous weeks (median and median absolute deviation:
robust to one odd week, and seasonal by weekday), in SQL too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache

import yaml

from metrics_layer import sqlrender
from metrics_layer.paths import INCLUDE_DIR
from metrics_layer.registry import IDENTIFIER, SEVERITIES, Domain, RegistryError

log = logging.getLogger(__name__)

SOURCE_CHECKS_FILE = INCLUDE_DIR / "contract" / "source_checks.yaml"
MAX_ENTITIES = 5  # offending entities named in a result (and an alert)
MAD_SCALE = 1.4826  # MAD x 1.4826 estimates the standard deviation of a normal series


@dataclass
class CheckResult:
    check_kind: str  # expectation | anomaly | source
    check_name: str
    target: str
    severity: str  # error | warn
    success: bool
    metric: str | None = None
    entity: str | None = None  # names of up to five offending entities, comma-separated
    observed: str | None = None
    expected: str | None = None
    details: dict = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return not self.success and self.severity == "error"

    def describe(self) -> str:
        parts = [f"[{self.severity}] {self.check_name}"]
        if self.observed is not None:
            parts.append(f"observed {self.observed}")
        if self.expected is not None:
            parts.append(f"expected {self.expected}")
        if self.entity:
            parts.append(f"e.g. {self.entity}")
        return "; ".join(parts)


RECORD_SQL = """
with replaced as (
    -- a retried task replaces what its earlier try stored for the same checks
    delete from metrics_ops.check_results
    where dag_id = %(dag)s and run_id = %(run)s and metric_date = %(d)s and check_kind = any(%(kinds)s)
),
added as (
    insert into metrics_ops.check_results (run_id, dag_id, domain, metric_date, check_kind, check_name,
        target, metric, entity, severity, success, observed, expected, details)
    select %(run)s, %(dag)s, %(domain)s, %(d)s, e.r ->> 'check_kind', e.r ->> 'check_name',
           e.r ->> 'target', e.r ->> 'metric', e.r ->> 'entity', e.r ->> 'severity',
           (e.r ->> 'success')::boolean, e.r ->> 'observed', e.r ->> 'expected', e.r -> 'details'
    from jsonb_array_elements(%(results)s::jsonb) with ordinality as e (r, n)
    order by e.n
)
insert into metrics_ops.validation_log (target, metric_date, run_id, validated_at, success, evaluated, failures)
select %(target)s, %(d)s, %(run)s, now(), %(success)s::boolean, %(evaluated)s::integer, %(failures)s::jsonb
where %(outcome)s::boolean
on conflict (target, metric_date, run_id) do update set validated_at = excluded.validated_at,
    success = excluded.success, evaluated = excluded.evaluated, failures = excluded.failures
"""


def record(conn, domain: Domain, dag_id: str, run_id: str | None, metric_date: date,
           results: list[CheckResult], outcome=None) -> None:
    """Store the results of one (run, domain, metric_date) in metrics_ops.check_results (a
    retried task replaces what its earlier try stored for the same checks) and, given a
    validation `outcome` (a ValidationSummary), that outcome in metrics_ops.validation_log: one
    statement, so one round trip and one atomic write however many checks there are (the small
    domains' validation is mostly fixed costs, bench/ P5)."""
    if not results and outcome is None:
        return
    run = run_id or "adhoc"
    rows = [{"check_kind": r.check_kind, "check_name": r.check_name, "target": r.target, "metric": r.metric,
             "entity": r.entity, "severity": r.severity, "success": r.success, "observed": r.observed,
             "expected": r.expected, "details": r.details} for r in results]
    conn.execute(RECORD_SQL, {
        "dag": dag_id, "run": run, "d": metric_date, "domain": domain.name,
        "kinds": sorted({r.check_kind for r in results}), "results": json.dumps(rows, default=str),
        "outcome": outcome is not None, "target": domain.table,
        "success": outcome.success if outcome is not None else None,
        "evaluated": outcome.evaluated if outcome is not None else None,
        "failures": json.dumps([f.__dict__ for f in outcome.failures]) if outcome is not None else "[]",
    })


def severity_of(domain: Domain, check_name: str, default: str) -> str:
    return domain.severity_overrides.get(check_name, default)


# ---------------------------------------------------------------------------- source checks

@dataclass(frozen=True)
class SourceRule:
    name: str
    bad: str
    severity: str = "error"


@dataclass(frozen=True)
class SourceSpec:
    table: str  # schema.table as in the registry (raw.<name>)
    key: tuple[str, ...]
    label: str | None
    window: str  # all | lookback | <days>
    date_columns: tuple[str, ...]
    rules: tuple[SourceRule, ...]
    freshness: dict | None


@cache
def source_specs() -> dict[str, SourceSpec]:
    raw = yaml.safe_load(SOURCE_CHECKS_FILE.read_text()) or {}
    specs = {}
    where = SOURCE_CHECKS_FILE.name
    for table, cfg in raw.items():
        key = tuple(cfg.get("key") or ())
        cols = tuple(cfg.get("date_columns") or ())
        for col in key + cols:
            if not IDENTIFIER.match(col):
                raise RegistryError(f"{where}: {table}: {col!r} is not a column name")
        window = str(cfg.get("window", "all"))
        if window not in ("all", "lookback") and not window.isdigit():
            raise RegistryError(f"{where}: {table}: window must be all, lookback or a number of days")
        if window != "all" and not cols:
            raise RegistryError(f"{where}: {table}: a window of days needs date_columns")
        rules = []
        for name, rule in (cfg.get("rules") or {}).items():
            sev = rule.get("severity", "error")
            if not IDENTIFIER.match(name) or sev not in SEVERITIES or not rule.get("bad"):
                raise RegistryError(f"{where}: {table}: rule {name!r} needs a name, `bad` and a severity in {SEVERITIES}")
            rules.append(SourceRule(name, str(rule["bad"]), sev))
        fresh = cfg.get("freshness")
        if fresh and (not IDENTIFIER.match(str(fresh.get("column", ""))) or "max_age_hours" not in fresh):
            raise RegistryError(f"{where}: {table}: freshness needs column and max_age_hours")
        specs[table] = SourceSpec(table, key, cfg.get("label"), window, cols, tuple(rules), fresh)
    return specs


def _window(spec: SourceSpec, domain: Domain, first: date, last: date) -> tuple[str, dict]:
    """SQL predicate selecting the rows a run for the metric_dates first..last reads, and its
    parameters."""
    if spec.window == "all":
        return "true", {}
    days = domain.lookback_days + 1 if spec.window == "lookback" else int(spec.window)
    lo = datetime.combine(first - timedelta(days=days), time(), UTC)
    hi = datetime.combine(last, time(), UTC)
    # a timestamp column and a date column both compare with the UTC midnights
    pred = " or ".join(f"({c} >= %(lo)s and {c} < %(hi)s)" for c in spec.date_columns)
    return f"({pred})", {"lo": lo, "hi": hi}


def _label(spec: SourceSpec) -> str:
    if spec.label:
        return f"({spec.label})"
    return " || ', ' || ".join(f"'{c}=' || {c}" for c in spec.key)


def _has_unique_index(cur, relation: str, key: tuple[str, ...]) -> bool:
    cur.execute(
        "select exists (select 1 from pg_index as i where i.indrelid = to_regclass(%s) "
        "and i.indisunique and i.indisvalid and i.indpred is null and i.indnkeyatts = %s "
        "and (select array_agg(a.attname::text order by a.attname) from pg_attribute as a "
        "where a.attrelid = i.indrelid and a.attnum = any(i.indkey::int2[])) = %s)",
        (relation, len(key), sorted(key)),
    )
    return cur.fetchone()[0]


def source_checks(conn, domain: Domain, metric_dates: date | list[date]) -> list[CheckResult]:
    """Run the source checks of every table the domain reads, on the rows a run for
    metric_dates (one date or a range) reads; freshness is judged at the last date. Returns one
    result per check (skipped tables have none)."""
    dates = [metric_dates] if isinstance(metric_dates, date) else sorted(metric_dates)
    first, metric_date = dates[0], dates[-1]
    specs = source_specs()
    results: list[CheckResult] = []
    with conn.cursor() as cur:
        for source in domain.sources:
            spec = specs.get(source)
            if spec is None:
                continue
            relation = f"{sqlrender.source_schema()}.{source.split('.')[1]}"
            pred, params = _window(spec, domain, first, metric_date)
            scope = ("every row" if spec.window == "all" else
                     f"rows with {' or '.join(spec.date_columns)} in [{params['lo']:%Y-%m-%d}, "
                     f"{params['hi']:%Y-%m-%d})")
            label = _label(spec)
            if spec.key:
                name = f"{source.split('.')[1]}_key_unique"
                sev = severity_of(domain, name, "error")
                if _has_unique_index(cur, relation, spec.key):
                    results.append(CheckResult("source", name, source, sev, True, observed="0 duplicates",
                                               expected="enforced by a unique index",
                                               details={"key": list(spec.key)}))
                else:
                    keys = ", ".join(spec.key)
                    cur.execute(
                        f"select count(*) over (), sum(n - 1) over (), label from (select {keys}, "  # noqa: S608
                        f"count(*) as n, min({label}) as label from {relation} where {pred} "
                        f"group by {keys} having count(*) > 1) as d order by label limit {MAX_ENTITIES}",
                        params)
                    rows = cur.fetchall()
                    count, extra = (rows[0][0], rows[0][1]) if rows else (0, 0)
                    results.append(CheckResult(
                        "source", name, source, sev, count == 0,
                        entity=", ".join(r[2] for r in rows) or None,
                        observed=f"{count} duplicated key(s), {extra} extra row(s)",
                        expected=f"({keys}) unique over {scope}",
                        details={"key": list(spec.key), "duplicated_keys": count,
                                 "extra_rows": extra, "rows": [r[2] for r in rows]}))
            for rule in spec.rules:
                sev = severity_of(domain, rule.name, rule.severity)
                cur.execute(
                    f"select count(*) over (), label from (select {label} as label from {relation} "  # noqa: S608
                    f"where {pred} and ({rule.bad})) as b order by label limit {MAX_ENTITIES}",
                    params)
                rows = cur.fetchall()
                count = rows[0][0] if rows else 0
                results.append(CheckResult(
                    "source", rule.name, source, sev, count == 0,
                    entity=", ".join(r[1] for r in rows) or None,
                    observed=f"{count} bad row(s)", expected=f"no row with {rule.bad} among {scope}",
                    details={"bad_rows": count, "rows": [r[1] for r in rows], "predicate": rule.bad}))
            if spec.freshness:
                col = spec.freshness["column"]
                max_age = float(spec.freshness["max_age_hours"])
                name = f"{source.split('.')[1]}_fresh"
                sev = severity_of(domain, name, spec.freshness.get("severity", "warn"))
                hi = datetime.combine(metric_date, time(), UTC)
                cur.execute(
                    f"select max({col})::timestamptz, extract(epoch from %(hi)s - max({col})::timestamptz) / 3600 "  # noqa: S608
                    f"from {relation} where {col} < %(hi)s", {"hi": hi})
                newest, age = cur.fetchone()
                ok = age is not None and float(age) <= max_age
                results.append(CheckResult(
                    "source", name, source, sev, ok,
                    observed=(f"newest {col} {newest:%Y-%m-%d %H:%M} UTC, {float(age):.1f} h before "
                              f"{metric_date}" if newest else f"no row before {metric_date}"),
                    expected=f"newest {col} at most {max_age:g} h before {metric_date} 00:00 UTC",
                    details={"newest": newest, "age_hours": float(age) if age is not None else None}))
    return results


# ---------------------------------------------------------------------------- anomaly checks

def history_dates(domain: Domain, metric_date: date, weeks: int) -> list[date]:
    """The same weekday of the `weeks` previous weeks, minus the excluded dates."""
    excluded = set(domain.anomaly_exclude_dates)
    return [d for d in (metric_date - timedelta(weeks=w) for w in range(1, weeks + 1)) if d not in excluded]


def anomaly_checks(conn, domain: Domain, metric_date: date, stage_id: str | None,
                   schema: str = "metrics_staging") -> list[CheckResult]:
    """Each anomaly rule of the domain: today's aggregate (from the run's staged slice, or from
    `schema`.table with stage_id None) against the median of the same weekday in the published
    table over the last `weeks` weeks. One SQL statement for all the domain's rules."""
    if not domain.anomalies:
        return []
    if metric_date in domain.anomaly_exclude_dates:
        return [CheckResult("anomaly", f"{r.metric}_anomaly", domain.table, r.severity, True,
                            metric=r.metric, observed="not judged: an excluded date",
                            expected="checks.anomaly.exclude_dates in the registry")
                for r in domain.anomalies]
    today_where = "metric_date = %(d)s" + (" and stage_id = %(stage)s" if stage_id else "")
    # one pass over today's rows and one over the history dates compute every rule's aggregate;
    # identifiers from the validated registry, values are bind parameters
    aggs = ", ".join(f"{r.agg}({r.metric})::numeric as v{i}" for i, r in enumerate(domain.anomalies))
    today_values = ", ".join(f"({i}, a.v{i})" for i in range(len(domain.anomalies)))
    hist_values = ", ".join(f"({i}, a.v{i}, a.metric_date = any(%(h{i})s::date[]))"
                            for i in range(len(domain.anomalies)))
    params: dict = {"d": metric_date, "stage": stage_id}
    every: set[date] = set()
    for i, r in enumerate(domain.anomalies):
        params[f"h{i}"] = history_dates(domain, metric_date, r.weeks)
        every.update(params[f"h{i}"])
    params["hist"] = sorted(every)
    sql = f"""
        with today as (
            select v.rule, v.value
            from (select {aggs} from {schema}.{domain.table} where {today_where}) as a
            cross join lateral (values {today_values}) as v (rule, value)
        ),
        hist as (
            select v.rule, a.metric_date, v.value
            from (select metric_date, {aggs} from entity.{domain.table}
                  where metric_date = any(%(hist)s::date[]) group by metric_date) as a
            cross join lateral (values {hist_values}) as v (rule, value, wanted)
            where v.wanted and v.value is not null
        ),
        med as (
            select rule, count(*) as n, percentile_cont(0.5) within group (order by value) as median
            from hist group by rule
        ),
        mad as (
            select h.rule, percentile_cont(0.5) within group (order by abs(h.value - m.median)) as mad
            from hist as h inner join med as m on h.rule = m.rule group by h.rule
        )
        select t.rule, t.value, coalesce(m.n, 0), m.median, d.mad,
               (select jsonb_object_agg(h.metric_date, h.value) from hist as h where h.rule = t.rule)
        from today as t left join med as m on t.rule = m.rule left join mad as d on t.rule = d.rule
        order by t.rule"""  # noqa: S608
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    results = []
    weekday = metric_date.strftime("%A")
    for rule_no, value, n, median, mad, history in rows:
        r = domain.anomalies[rule_no]
        name = f"{r.metric}_anomaly"
        details = {"agg": r.agg, "history": history or {}, "weeks": r.weeks, "k": r.k,
                   "min_abs": r.min_abs, "min_rel": r.min_rel}
        if value is None or n < r.min_history:
            results.append(CheckResult(
                "anomaly", name, domain.table, r.severity, True, metric=r.metric,
                observed=f"{r.agg} {value}" if value is not None else "no value",
                expected=f"no verdict: {n} of the last {r.weeks} {weekday}s published, "
                         f"{r.min_history} needed", details={**details, "verdict": "insufficient history"}))
            continue
        median, mad, value = float(median), float(mad), float(value)
        threshold = max(r.k * MAD_SCALE * mad, r.min_abs, r.min_rel * abs(median))
        deviation = value - median
        ok = abs(deviation) <= threshold
        change = f"{deviation / median:+.0%}" if median else "n/a"
        results.append(CheckResult(
            "anomaly", name, domain.table, r.severity, ok, metric=r.metric,
            observed=f"{r.agg} {value:,.2f} ({change} vs median)",
            expected=f"{median:,.2f} ± {threshold:,.2f} (median of {n} {weekday}s, "
                     f"max of {r.k:g}×1.4826×MAD {mad:,.2f}, {r.min_abs:g}, {r.min_rel:.0%})",
            details={**details, "value": value, "median": median, "mad": mad,
                     "threshold": threshold, "verdict": "ok" if ok else "anomaly"}))
    return results
