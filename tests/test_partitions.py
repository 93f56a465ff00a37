"""The two long tables (metrics_unified_domains, metrics_api) are partitioned by month of
metric_date: the fan-in attaches a month's partition before it writes there, a layer of an
earlier version (unpartitioned tables) is migrated with every row kept, and attaching a partition
never makes a reader wait."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal

import psycopg
import pytest

from metrics_layer import pipeline
from metrics_layer.registry import load_registry

UNIFIED = "entity.metrics_unified_domains"
API = "entity.metrics_api"


@pytest.fixture
def schema(conn):
    pipeline.ensure_schema(conn)
    return conn


def _bounds(conn, table: str) -> dict[str, str]:
    return dict(conn.execute(
        "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits as i "
        "join pg_class as c on c.oid = i.inhrelid where i.inhparent = %s::regclass", (table,)).fetchall())


def _unified_rows(conn, values: dict[date, int], metric: str = "daily_active_users") -> None:
    m = load_registry()["product"].metric(metric)
    with conn.cursor() as cur:
        pipeline.ensure_partitions(cur, UNIFIED, values)
    for d, v in values.items():
        conn.execute(
            "insert into entity.metrics_unified_domains (metric_date, domain, entity_type, entity_id, "
            "entity_name, metric_name, metric_value, importance_tier, unit) "
            "values (%s, 'product', 'product', 'all', null, %s, %s, %s, %s)", (d, metric, v, m.tier, m.unit))
        conn.execute("insert into metrics_ops.unified_slices (domain, metric_date, source_version, built_at, "
                     "row_count) values ('product', %s, 0, now(), 1)", (d,))


def test_a_partition_per_month_bounded_by_the_month_across_a_year_end_and_a_leap_day(schema):
    with schema.cursor() as cur:
        created = pipeline.ensure_partitions(cur, UNIFIED, [date(2025, 12, 31), date(2026, 1, 1),
                                                           date(2024, 2, 29), date(2026, 1, 31)])
        assert created == [f"{UNIFIED}_y2024m02", f"{UNIFIED}_y2025m12", f"{UNIFIED}_y2026m01"]
        assert pipeline.ensure_partitions(cur, UNIFIED, [date(2026, 1, 15)]) == []  # already there
    assert _bounds(schema, UNIFIED) == {
        "metrics_unified_domains_y2024m02": "FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')",
        "metrics_unified_domains_y2025m12": "FOR VALUES FROM ('2025-12-01') TO ('2026-01-01')",
        "metrics_unified_domains_y2026m01": "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')",
    }
    # each partition has the parent's indexes and autovacuum tuned to a month's rows
    options = schema.execute("select reloptions from pg_class where oid = %s::regclass",
                             (f"{UNIFIED}_y2026m01",)).fetchone()[0]
    assert "autovacuum_vacuum_scale_factor=0.02" in options
    assert "autovacuum_analyze_scale_factor=0.01" in options
    indexes = schema.execute("select count(*) from pg_index where indrelid = %s::regclass",
                             (f"{UNIFIED}_y2026m01",)).fetchone()[0]
    assert indexes == 2  # the primary key and (domain, metric_name, metric_date, entity_id)
    # a date of a month with no partition is refused, never stored somewhere else
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        schema.execute("insert into entity.metrics_unified_domains values ('2026-02-01', 'product', "
                       "'product', 'all', null, 'daily_active_users', 1, 'tier_1', 'users')")


def test_comparisons_read_across_partitions_at_a_year_end(schema):
    _unified_rows(schema, {date(2025, 12, 1): 40, date(2025, 12, 25): 70, date(2025, 12, 31): 100,
                           date(2026, 1, 1): 90})
    with schema.transaction(), schema.cursor() as cur:
        pipeline.build_api(cur, load_registry()["product"], [date(2026, 1, 1)])
    row = schema.execute(
        "select tableoid::regclass::text, value_1d_ago, value_7d_ago, value_1m_ago, pct_change_1d "
        "from entity.metrics_api where metric_date = '2026-01-01' and metric_name = 'daily_active_users'"
    ).fetchone()
    # stored in January's partition, compared with December's values in December's partition
    assert row == ("metrics_api_y2026m01", Decimal(100), Decimal(70), Decimal(40), Decimal("-10.00"))
    assert set(_bounds(schema, API)) == {"metrics_api_y2026m01"}  # only the month it wrote


def test_an_unpartitioned_layer_is_migrated_with_every_row(schema):
    """A warehouse migrated by an earlier version has plain tables: the migration moves their rows
    into monthly partitions, in the migration's one transaction."""
    _unified_rows(schema, {date(2026, 2, 28): 5, date(2026, 3, 1): 6, date(2026, 3, 31): 7})
    with schema.transaction(), schema.cursor() as cur:
        pipeline.build_api(cur, load_registry()["product"], [date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 31)])
    dumps = {t: schema.execute(f"select t.*::text from {t} as t order by 1").fetchall() for t in (UNIFIED, API)}  # noqa: S608
    assert len(dumps[UNIFIED]) == len(dumps[API]) == 3
    # the earlier version's shape: the same columns in a plain table, with its indexes
    earlier_indexes = {
        UNIFIED: ["create index metrics_unified_domains_metric_entity_idx on entity.metrics_unified_domains "
                  "(domain, metric_name, metric_date, entity_id)"],
        API: ["create index metrics_api_metric_idx on entity.metrics_api (domain, metric_name, metric_date)",
              "create index metrics_api_entity_idx on entity.metrics_api (domain, entity_id, metric_date)"],
    }
    for table in (UNIFIED, API):
        name = table.split(".")[1]
        schema.execute(f"create table entity.{name}_plain (like {table} including defaults)")
        schema.execute(f"insert into entity.{name}_plain select * from {table}")  # noqa: S608
        schema.execute(f"drop table {table}")
        schema.execute(f"alter table entity.{name}_plain rename to {name}")
        schema.execute(f"alter table {table} add primary key (metric_date, domain, entity_id, metric_name)")
        for ddl in earlier_indexes[table]:
            schema.execute(ddl)
        assert schema.execute("select relkind from pg_class where oid = %s::regclass", (table,)).fetchone()[0] == "r"
    schema.execute("delete from metrics_ops.schema_version")  # as after an upgrade: the schema hash differs

    assert pipeline.ensure_schema(schema)
    for table in (UNIFIED, API):
        assert schema.execute("select relkind from pg_class where oid = %s::regclass", (table,)).fetchone()[0] == "p"
        assert schema.execute(f"select t.*::text from {table} as t order by 1").fetchall() == dumps[table]  # noqa: S608
        name = table.split(".")[1]
        assert set(_bounds(schema, table)) == {f"{name}_y2026m02", f"{name}_y2026m03"}
    assert schema.execute("select to_regclass('entity.metrics_api_unpartitioned')").fetchone()[0] is None
    # the earlier metric index gave way to the covering one, on the table and every partition
    indexes = {r[0]: r[1] for r in schema.execute(
        "select c.relname, pg_get_indexdef(c.oid) from pg_index as i join pg_class as c on c.oid = i.indexrelid "
        "where i.indrelid = any(array(select inhrelid from pg_inherits where inhparent = %s::regclass) "
        "|| %s::regclass)", (UNIFIED, UNIFIED)).fetchall()}
    covering = [d for d in indexes.values() if "(domain, metric_name, metric_date, entity_id)" in d]
    assert len(covering) == 3 and all(d.endswith("INCLUDE (metric_value, importance_tier)") for d in covering)
    assert not [n for n in indexes if "metric_entity" in n]
    # the reader function over the unified table still answers
    assert schema.execute("select entity.metric_value_as_of('product', 'daily_active_users', date '2026-03-01', "
                          "'all', now())").fetchone()[0] == 6


def test_attaching_a_month_never_makes_a_reader_wait(schema, pg_server):
    """A reader in the middle of a long transaction on the unified table (a dashboard's query,
    an analyst's session) neither blocks the fan-in attaching a new month, nor waits for the
    fan-in's open transaction that attached it."""
    _unified_rows(schema, {date(2026, 3, 31): 1})
    kwargs = {"host": schema.info.host, "dbname": schema.info.dbname, "user": schema.info.user}
    with psycopg.connect(**kwargs) as reader, psycopg.connect(**kwargs) as writer:
        assert reader.execute("select count(*) from entity.metrics_unified_domains").fetchone()[0] == 1
        # reader's transaction stays open, holding its ACCESS SHARE lock on the parent
        writer.execute("set lock_timeout = '2s'")
        with writer.cursor() as cur:
            assert pipeline.ensure_partitions(cur, UNIFIED, [date(2026, 4, 1)]) == [f"{UNIFIED}_y2026m04"]
        # the writer's transaction is still open (holding what ATTACH took): another reader reads
        done = threading.Event()

        def read() -> None:
            with psycopg.connect(**kwargs, autocommit=True) as r:
                r.execute("set statement_timeout = '5s'")
                r.execute("select count(*) from entity.metrics_unified_domains").fetchone()
                done.set()

        t = threading.Thread(target=read)
        t.start()
        t.join(10)
        assert done.is_set()
        writer.commit()
        reader.commit()
    assert set(_bounds(schema, UNIFIED)) == {"metrics_unified_domains_y2026m03", "metrics_unified_domains_y2026m04"}
