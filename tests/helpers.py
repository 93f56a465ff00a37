"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from metrics_layer import seed

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(conn, name: str) -> None:
    """Create the source contract and load a hand-built fixture file."""
    seed.apply_source_contract(conn)
    conn.execute((FIXTURES / name).read_text())


def rows_by_key(conn, table: str, metric_date: date, key: str) -> dict:
    with conn.cursor() as cur:
        cur.execute(f"select * from {table} where metric_date = %s", (metric_date,))
        cols = [c.name for c in cur.description]
        return {r[cols.index(key)]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}


def table_dump(conn, table: str) -> list[tuple]:
    """Every row of a table in a stable order, for before/after comparisons."""
    return conn.execute(f"select t.*::text from {table} as t order by 1").fetchall()


def put_values(conn, domain, metric: str, values: dict, entity: str = "all") -> None:
    """Hand-built values of one metric of one entity, {metric_date: value}, as a domain run would
    leave them: in the domain table entity.<table> (the row's other metrics untouched, NULL if
    new) and published (a new version in metrics_ops.publish_log), so the fan-in's metrics_api
    build (pipeline.build_api, build_unified) reads them."""
    from psycopg import sql

    table, key = sql.Identifier("entity", domain.table), sql.Identifier(domain.id_column)
    column = sql.Identifier(domain.metric(metric).name)
    for d, v in values.items():
        conn.execute(sql.SQL("insert into {table} (metric_date, {key}, {column}) values (%s, cast(%s as {type}), %s) "
                             "on conflict (metric_date, {key}) do update set {column} = excluded.{column}").format(
            table=table, key=key, column=column, type=sql.SQL(domain.id_type)), (d, entity, v))
        conn.execute("insert into metrics_ops.publish_log (target, metric_date, published_at, run_id, row_count, "
                     "version) values (%s, %s, now(), 'hand-built', 1, nextval('metrics_ops.publish_version')) "
                     "on conflict (target, metric_date) do update set version = excluded.version",
                     (domain.table, d))
