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
           "rounding")


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
                f"{_cell(m.window)} | {rounding_text(m)} | "
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
    return "\n".join(lines).rstrip() + "\n"


def write_markdown() -> None:
    CATALOG_MD.write_text(render_markdown())


def catalog_rows() -> list[tuple]:
    return [(d.name, d.table, m.name, m.group, m.description, m.formula, m.unit, m.type, m.window,
             m.direction, m.tier, m.owner, m.status, m.requires, m.rounding)
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
            primary key (domain, metric_name)
        )""")
    # a catalog created before a column existed: `create table if not exists` does not add it
    cur.execute(f"alter table {CATALOG_TABLE} add column if not exists rounding integer")
    cur.execute(f"delete from {CATALOG_TABLE}")  # noqa: S608
    cur.executemany(f"insert into {CATALOG_TABLE} ({cols}) values ({', '.join(['%s'] * len(COLUMNS))})",  # noqa: S608
                    catalog_rows())
