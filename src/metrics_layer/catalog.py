"""The metric catalog, generated from the registry: docs/metrics.md for people reading the repo
(`make catalog`; a test fails when it is stale) and entity.metrics_catalog for Superset users,
who see definitions next to the data."""

from __future__ import annotations

from metrics_layer.paths import DOCS_DIR
from metrics_layer.registry import TIERS, Domain, Metric, load_registry

CATALOG_MD = DOCS_DIR / "metrics.md"
CATALOG_TABLE = "entity.metrics_catalog"
COLUMNS = ("domain", "table_name", "metric_name", "metric_group", "description", "formula", "unit",
           "sql_type", "time_window", "direction", "importance_tier", "owner", "status", "requires",
           "rounding", "additive")


def rounding_text(m: Metric) -> str:
    """How a metric's published values are rounded, for people: "2 decimals", "integer"."""
    if m.rounding is None:
        return "none" if m.numeric else "n/a (text)"
    if m.rounding == 0:
        return "integer"
    return f"{m.rounding} decimal{'s' if m.rounding > 1 else ''}"


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _domain_md(d: Domain) -> list[str]:
    out = [f"## {d.name}: `entity.{d.table}`", "",
           f"- **Grain**: {d.grain}", f"- **As of**: {_cell(d.as_of)}",
           f"- **Owner**: {d.owner}; **sources**: {', '.join(f'`{s}`' for s in d.sources)}",
           f"- **DAG**: `{d.table}`; definitions in `include/registry/{d.path.name}`", ""]
    for tier in TIERS:
        metrics = [m for m in d.implemented if m.tier == tier]
        if not metrics:
            continue
        out += [f"### {tier.replace('_', ' ').title()}", "",
                "| metric | description | formula | unit | window | rounding | good when |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| `{m.name}` | {_cell(m.description)} | {_cell(m.formula)} | {m.unit} | "
                f"{_cell(m.window)}{' (additive: MTD/QTD/YTD in metrics_api)' if m.additive else ''} | "
                f"{rounding_text(m)} | "
                f"{m.direction.replace('_is_better', '').replace('_', ' ')} |"
                for m in metrics]
        out.append("")
    if d.placeholders:
        out += ["### Not yet implemented (NULL columns)", "",
                "| metric | requires | tier | intended definition |", "|---|---|---|---|"]
        out += [f"| `{m.name}` | {_cell(m.requires)} | {m.tier} | {_cell(m.description)} |"
                for m in d.placeholders]
        out.append("")
    return out


COMPARISONS_MD = """## Time comparisons: `entity.metrics_api`

One row per `metric_date`, domain, entity and implemented metric with a non-null value, with the
value, its unit, tier and direction (the view `metrics_unified_domains` shows these first
columns), and:

| columns | rule |
|---|---|
| `value_1d_ago`, `value_7d_ago` | the value of `metric_date - 1` and `- 7` days |
| `value_1m_ago` | the value of `metric_date - 1 month`, clamped to the month's last day: the 28th to the 31st of March all compare with February's last day |
| `value_1y_ago` | `metric_date - 1 year`: February 29 compares with February 28 |
| `value_364d_ago` | the same weekday a year before (weekday-aligned year over year, for daily activity) |
| `change_x` | `metric_value - value_x_ago` |
| `pct_change_x` | `100 * change_x / abs(value_x_ago)`, rounded to 2 decimals; NULL when the base is 0 or missing, never infinity or an error |
| (any comparison) | NULL when the earlier date has no row for the entity, never 0 |
| `mtd_total`, `qtd_total`, `ytd_total` | additive metrics only (a daily flow: the value of metric_date X covers day X-1): the sum over the days of the period through D-1, the period being the month, quarter or year of D-1 |
| `prior_mtd_total`, `prior_qtd_total`, `prior_ytd_total` | the same days of the previous period: its first day through the same day of month (clamped to its month end) |
| `is_improving` | compared with the day before, from the direction: higher (or lower) is better; NULL for neutral metrics, an unchanged value or no value the day before |

The fan-in maintains it per metric_date: the dates a domain (re)published and the later dates
whose comparisons point at them, never all of history.
""".splitlines()


def render_markdown() -> str:
    domains = list(load_registry().values())
    lines = ["# Metric catalog", "",
             "Generated from `include/registry/*.yaml` by `make catalog`: do not edit by hand. The",
             "same rows are in the warehouse table `entity.metrics_catalog`.", "",
             "Rounding: the decimal places of the published values (`rounding` in the registry and",
             "in `entity.metrics_catalog`; integer = 0). Values are rounded with PostgreSQL's",
             "round() (half away from zero); a sum of source amounts in cents is exact at 2",
             "decimals without rounding. Where a formula says \"exact\", the value is computed",
             "without any intermediate rounding and rounded once.", ""]
    for d in domains:
        n_impl, n_ph = len(d.implemented), len(d.placeholders)
        lines.append(f"- [{d.name}](#{d.name}-entity{d.table}): "
                     f"{n_impl} implemented, {n_ph} placeholders")
    lines.append("")
    for d in domains:
        lines += _domain_md(d)
    lines += COMPARISONS_MD
    return "\n".join(lines).rstrip() + "\n"


def write_markdown() -> None:
    CATALOG_MD.write_text(render_markdown())


def catalog_rows() -> list[tuple]:
    return [(d.name, d.table, m.name, m.group, m.description, m.formula, m.unit, m.type, m.window,
             m.direction, m.tier, m.owner, m.status, m.requires, m.rounding, m.additive)
            for d in load_registry().values() for m in d.metrics]


def sync_catalog(cur) -> None:
    """Replace entity.metrics_catalog with the registry (inside the caller's transaction)."""
    cols = ", ".join(COLUMNS)
    cur.execute(f"""
        create table if not exists {CATALOG_TABLE} (
            domain text not null, table_name text not null, metric_name text not null,
            metric_group text, description text not null, formula text not null,
            unit text not null, sql_type text not null, time_window text not null,
            direction text not null, importance_tier text not null, owner text not null,
            status text not null, requires text, rounding integer,
            additive boolean not null default false,
            primary key (domain, metric_name)
        )""")
    # a catalog created before a column existed: `create table if not exists` does not add it
    cur.execute(f"alter table {CATALOG_TABLE} add column if not exists rounding integer")
    cur.execute(f"alter table {CATALOG_TABLE} add column if not exists additive boolean not null default false")
    cur.execute(f"delete from {CATALOG_TABLE}")  # noqa: S608
    cur.executemany(f"insert into {CATALOG_TABLE} ({cols}) values ({', '.join(['%s'] * len(COLUMNS))})",  # noqa: S608
                    catalog_rows())
