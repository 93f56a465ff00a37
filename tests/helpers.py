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
