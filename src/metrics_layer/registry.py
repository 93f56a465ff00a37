"""The metric registry: one YAML file per domain under include/registry/.

Everything else reads it: the build wrapper (which columns a table has), the unified unpivot, the
expectation-suite coverage test, the catalog and the DAG docs. Loading validates it, so a typo in
the registry fails loudly at DAG parse time rather than producing a wrong table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path

import yaml

from metrics_layer.paths import REGISTRY_DIR

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
QUALIFIED = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$")
TIERS = ("tier_1", "tier_2", "tier_3")
STATUSES = ("implemented", "placeholder")
DIRECTIONS = ("higher_is_better", "lower_is_better", "neutral")
SQL_TYPES = ("numeric", "integer", "bigint", "text", "date", "boolean")
NUMERIC_TYPES = ("numeric", "integer", "bigint")
MAX_ROUNDING = 10
# late rows: every daily run rebuilds this many days of state before its metric_date (and
# republishes the metric_dates whose windows saw a changed day)
DEFAULT_LOOKBACK_DAYS = 3
KINDS = ("source", "derived")
SEVERITIES = ("error", "warn")
ANOMALY_AGGS = ("sum", "avg", "min", "max")
DEFAULT_SLACK_CONN_ID = "slack_alerts"
# anomaly checks: today's value against the same weekday of the last `weeks` weeks (robust:
# median and median absolute deviation); see docs/runbook.md#anomaly
ANOMALY_DEFAULTS = {"weeks": 8, "k": 4.0, "min_abs": 0.0, "min_rel": 0.2, "min_history": 4,
                    "severity": "warn"}
METRIC_REQUIRED = ("name", "description", "formula", "unit", "window", "direction", "tier", "status")


class RegistryError(ValueError):
    """The registry is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Metric:
    name: str
    domain: str
    description: str
    formula: str
    unit: str
    window: str
    direction: str
    tier: str
    owner: str
    status: str
    group: str = ""
    type: str = "numeric"
    requires: str | None = None
    # decimal places of the published values (round() once, at the end): 0 for counts, None for
    # a text metric (or not declared; tests/test_rounding.py requires it for every numeric one)
    rounding: int | None = None
    # a daily flow whose values add up over days (the value of metric_date X covers day X-1):
    # metrics_api adds period-to-date totals (MTD, QTD, YTD) against the prior period for it
    additive: bool = False

    @property
    def implemented(self) -> bool:
        return self.status == "implemented"

    @property
    def numeric(self) -> bool:
        """Numeric metrics go into metrics_unified_domains.metric_value; text metrics (e.g. a
        top channel's name) stay in the domain table only."""
        return self.type in NUMERIC_TYPES


@dataclass(frozen=True)
class AnomalyRule:
    """An anomaly check on a tier-1 metric's daily aggregate (`agg` over the domain's rows of a
    metric_date): flagged when |today - median| of the same weekday's last `weeks` values exceeds
    k x 1.4826 x MAD, and also min_abs and min_rel x |median|; no verdict with fewer than
    `min_history` of those weeks published."""

    metric: str
    agg: str = "sum"
    weeks: int = 8
    k: float = 4.0
    min_abs: float = 0.0
    min_rel: float = 0.2
    min_history: int = 4
    severity: str = "warn"


@dataclass(frozen=True)
class Alerting:
    """Where a domain's alerts go: the Slack connection (a webhook, or the Web API with
    `channel`) and whom they mention (a Slack handle such as `<!subteam^S0123>` or `@team`)."""

    owner: str
    mention: str
    slack_conn_id: str = DEFAULT_SLACK_CONN_ID
    channel: str | None = None


@dataclass(frozen=True)
class Domain:
    name: str
    table: str
    owner: str
    description: str
    grain: str
    as_of: str
    entity_type: str
    id_column: str
    id_type: str
    name_column: str | None
    dimensions: dict[str, str]
    sources: tuple[str, ...]
    states: tuple[str, ...]
    state_window_days: int
    lookback_days: int
    build_sql: str
    expectation_suite: str
    metrics: tuple[Metric, ...]
    path: Path = field(compare=False)
    # the same rows for many metric_dates in one statement (bind parameter `metric_dates`), which
    # a range build uses when it is cheaper than one build_sql per date (pipeline.build_dates)
    range_build_sql: str | None = None
    headline: dict[str, str] = field(default_factory=dict, compare=False)
    # "source": a domain DAG builds it from source tables; "derived": the fan-in builds it from
    # the published domain tables (the company overview), after they publish
    kind: str = "source"
    alerting: Alerting | None = field(default=None, compare=False)
    # check name -> severity, overriding the default rule (validation.default_severity)
    severity_overrides: dict[str, str] = field(default_factory=dict, compare=False)
    anomalies: tuple[AnomalyRule, ...] = field(default=(), compare=False)
    anomaly_exclude_dates: tuple[date, ...] = field(default=(), compare=False)

    @property
    def derived(self) -> bool:
        return self.kind == "derived"

    @property
    def implemented(self) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if m.implemented)

    @property
    def unified(self) -> tuple[Metric, ...]:
        """Metrics unpivoted into metrics_unified_domains: implemented and numeric."""
        return tuple(m for m in self.metrics if m.implemented and m.numeric)

    @property
    def placeholders(self) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if not m.implemented)

    @property
    def key_columns(self) -> tuple[str, ...]:
        return ("metric_date", self.id_column)

    @property
    def descriptive_columns(self) -> tuple[str, ...]:
        name = (self.name_column,) if self.name_column else ()
        return name + tuple(self.dimensions)

    @property
    def built_columns(self) -> tuple[str, ...]:
        """Columns the build SQL must return, in order: keys, descriptive, implemented metrics."""
        return self.key_columns + self.descriptive_columns + tuple(m.name for m in self.implemented)

    @property
    def table_columns(self) -> dict[str, str]:
        """Every column of entity.<table> with its SQL type (placeholders included)."""
        cols = {"metric_date": "date", self.id_column: self.id_type}
        if self.name_column:
            cols[self.name_column] = "text"
        cols.update(self.dimensions)
        cols.update({m.name: m.type for m in self.metrics})
        return cols

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.name} has no metric {name!r}")


def _require(cond: bool, path: Path, where: str, msg: str) -> None:
    if not cond:
        raise RegistryError(f"{path.name}: {where}: {msg}")


def _ident(value: object, path: Path, where: str) -> str:
    _require(isinstance(value, str) and bool(IDENTIFIER.match(value)), path, where,
             f"{value!r} is not a lower-case SQL identifier")
    return value  # type: ignore[return-value]


def load_domain(path: Path) -> Domain:
    raw = yaml.safe_load(path.read_text())
    _require(isinstance(raw, dict), path, "file", "must be a mapping")
    for key in ("domain", "table", "owner", "description", "grain", "as_of", "entity",
                "sources", "build_sql", "expectation_suite", "metrics"):
        _require(key in raw, path, "domain", f"missing key {key!r}")
    name = _ident(raw["domain"], path, "domain")
    table = _ident(raw["table"], path, "table")
    ent = raw["entity"]
    id_column = _ident(ent.get("id_column"), path, "entity.id_column")
    dims = {_ident(k, path, "entity.dimensions"): v for k, v in (ent.get("dimensions") or {}).items()}
    for col, typ in dims.items():
        _require(typ in SQL_TYPES, path, f"dimension {col}", f"type {typ!r} not in {SQL_TYPES}")
    for src in raw["sources"]:
        _require(bool(QUALIFIED.match(src)), path, "sources", f"{src!r} is not schema.table")
    metrics: list[Metric] = []
    seen: set[str] = set()
    for i, m in enumerate(raw["metrics"]):
        where = f"metrics[{i}] {m.get('name', '?')}"
        for key in METRIC_REQUIRED:
            _require(m.get(key) not in (None, ""), path, where, f"missing {key!r}")
        mname = _ident(m["name"], path, where)
        _require(mname not in seen, path, where, "duplicate metric name")
        seen.add(mname)
        _require(m["tier"] in TIERS, path, where, f"tier must be one of {TIERS}")
        _require(m["status"] in STATUSES, path, where, f"status must be one of {STATUSES}")
        _require(m["direction"] in DIRECTIONS, path, where, f"direction must be one of {DIRECTIONS}")
        mtype = m.get("type", "numeric")
        _require(mtype in SQL_TYPES, path, where, f"type {mtype!r} not in {SQL_TYPES}")
        if m["status"] == "placeholder":
            _require(bool(m.get("requires")), path, where, "a placeholder must say what it requires")
        rounding = m.get("rounding")
        _require(rounding is None or (type(rounding) is int and 0 <= rounding <= MAX_ROUNDING), path,
                 where, f"rounding must be a number of decimal places 0-{MAX_ROUNDING} (got {rounding!r})")
        _require(rounding in (None, 0) or mtype == "numeric", path, where,
                 f"type {mtype} holds whole numbers: rounding must be 0 (got {rounding})")
        _require(rounding is None or mtype in NUMERIC_TYPES, path, where,
                 f"a {mtype} metric has no rounding")
        metrics.append(Metric(
            name=mname, domain=name, description=str(m["description"]).strip(),
            formula=str(m["formula"]).strip(), unit=_ident(m["unit"], path, where + " unit"),
            window=str(m["window"]),
            direction=m["direction"], tier=m["tier"], owner=m.get("owner", raw["owner"]),
            status=m["status"], group=m.get("group", ""), type=mtype, requires=m.get("requires"),
            rounding=rounding, additive=bool(m.get("additive", False)),
        ))
        _require(isinstance(m.get("additive", False), bool), path, where, "additive must be true or false")
        _require(not metrics[-1].additive or metrics[-1].numeric, path, where,
                 "only a numeric metric can be additive")
    kind = raw.get("kind", "source")
    _require(kind in KINDS, path, "kind", f"must be one of {KINDS}")
    _require(kind == "source" or not raw.get("states"), path, "states", "a derived domain reads no state")
    window = int(raw.get("state_window_days", 30))
    lookback = int(raw.get("lookback_days", DEFAULT_LOOKBACK_DAYS))
    _require(0 <= lookback <= window, path, "lookback_days",
             f"{lookback} must be between 0 and state_window_days ({window})")
    clash = seen & ({"metric_date", id_column, ent.get("name_column")} | set(dims))
    _require(not clash, path, "metrics", f"metric names clash with key columns: {sorted(clash)}")
    alerting = _load_alerting(raw.get("alerts") or {}, raw["owner"], path)
    checks = raw.get("checks") or {}
    _require(isinstance(checks, dict), path, "checks", "must be a mapping")
    overrides = {}
    for check, sev in (checks.get("severity") or {}).items():
        _require(sev in SEVERITIES, path, f"checks.severity[{check}]", f"must be one of {SEVERITIES}")
        overrides[str(check)] = sev
    anomalies, excluded = _load_anomalies(checks.get("anomaly") or {}, {m.name: m for m in metrics}, path)
    return Domain(
        name=name, table=table, owner=raw["owner"], description=raw["description"].strip(),
        grain=raw["grain"], as_of=raw["as_of"].strip(), entity_type=ent.get("type", id_column),
        id_column=id_column, id_type=ent.get("id_type", "bigint"),
        name_column=_ident(ent["name_column"], path, "entity.name_column")
        if ent.get("name_column") else None,
        dimensions=dims, sources=tuple(raw["sources"]), states=tuple(raw.get("states") or ()),
        state_window_days=window,
        lookback_days=lookback,
        build_sql=raw["build_sql"], expectation_suite=raw["expectation_suite"],
        metrics=tuple(metrics), path=path, range_build_sql=raw.get("range_build_sql"),
        headline={_ident(k, path, "headline"): str(v) for k, v in (raw.get("headline") or {}).items()},
        kind=kind, alerting=alerting, severity_overrides=overrides, anomalies=anomalies,
        anomaly_exclude_dates=excluded,
    )


def _load_alerting(raw: dict, owner: str, path: Path) -> Alerting:
    _require(isinstance(raw, dict), path, "alerts", "must be a mapping")
    unknown = set(raw) - {"mention", "slack_conn_id", "channel"}
    _require(not unknown, path, "alerts", f"unknown keys {sorted(unknown)}")
    conn_id = raw.get("slack_conn_id", DEFAULT_SLACK_CONN_ID)
    _require(isinstance(conn_id, str) and bool(re.match(r"^[A-Za-z0-9_.-]+$", conn_id)), path,
             "alerts.slack_conn_id", f"{conn_id!r} is not an Airflow connection id")
    return Alerting(owner=owner, mention=str(raw.get("mention") or f"@{owner}"),
                    slack_conn_id=conn_id, channel=raw.get("channel"))


def _load_anomalies(raw: dict, metrics: dict[str, Metric], path: Path):
    _require(isinstance(raw, dict), path, "checks.anomaly", "must be a mapping")
    defaults = dict(ANOMALY_DEFAULTS)
    defaults.update(raw.get("defaults") or {})
    rules = []
    for name, cfg in (raw.get("metrics") or {}).items():
        where = f"checks.anomaly.metrics.{name}"
        _require(name in metrics, path, where, "no such metric")
        _require(metrics[name].implemented and metrics[name].numeric, path, where,
                 "only an implemented numeric metric can have an anomaly check")
        opts = {**defaults, **(cfg or {})}
        unknown = set(opts) - set(ANOMALY_DEFAULTS) - {"agg"}
        _require(not unknown, path, where, f"unknown keys {sorted(unknown)}")
        rule = AnomalyRule(metric=name, agg=opts.get("agg", "sum"), weeks=int(opts["weeks"]),
                           k=float(opts["k"]), min_abs=float(opts["min_abs"]),
                           min_rel=float(opts["min_rel"]), min_history=int(opts["min_history"]),
                           severity=opts["severity"])
        _require(rule.agg in ANOMALY_AGGS, path, where, f"agg must be one of {ANOMALY_AGGS}")
        _require(1 <= rule.min_history <= rule.weeks <= 52, path, where,
                 "need 1 <= min_history <= weeks <= 52")
        _require(rule.k > 0 and rule.min_abs >= 0 and rule.min_rel >= 0, path, where,
                 "k must be > 0, min_abs and min_rel >= 0")
        _require(rule.severity in SEVERITIES, path, where, f"severity must be one of {SEVERITIES}")
        rules.append(rule)
    excluded = []
    for d in raw.get("exclude_dates") or []:
        _require(isinstance(d, date), path, "checks.anomaly.exclude_dates", f"{d!r} is not a YYYY-MM-DD date")
        excluded.append(d)
    return tuple(rules), tuple(sorted(excluded))


@cache
def load_registry(directory: Path = REGISTRY_DIR) -> dict[str, Domain]:
    """All domains, keyed by domain name: source domains in file-name order, then the derived
    ones (built from the others)."""
    domains: dict[str, Domain] = {}
    tables: set[str] = set()
    for path in sorted(directory.glob("*.yaml")):
        d = load_domain(path)
        if d.name in domains or d.table in tables:
            raise RegistryError(f"{path.name}: domain {d.name!r} or table {d.table!r} defined twice")
        domains[d.name] = d
        tables.add(d.table)
    return dict(sorted(domains.items(), key=lambda kv: kv[1].derived))


def domain_by_table(table: str) -> Domain:
    for d in load_registry().values():
        if d.table == table:
            return d
    raise KeyError(f"no registry domain has table {table!r}")


def source_domains() -> list[Domain]:
    """The domains with a DAG of their own (built from source tables)."""
    return [d for d in load_registry().values() if not d.derived]


def derived_domains() -> list[Domain]:
    """The domains the fan-in builds from the published domain tables."""
    return [d for d in load_registry().values() if d.derived]

