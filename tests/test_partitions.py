"""The long table metrics_api (read also through the view metrics_unified_domains) is partitioned
by month of metric_date: the fan-in attaches a month's partition before it writes there, a layer
of an earlier version (plain tables, and a unified table of its own) is migrated with every value
kept, and attaching a partition never makes a reader wait."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal

import psycopg
import pytest

from helpers import put_values
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


PRODUCT = load_registry()["product"]


def _values(conn, values: dict[date, int]) -> None:
    """Published product DAU values, built into metrics_api as the fan-in builds them."""
    put_values(conn, PRODUCT, "daily_active_users", values)
    with conn.transaction(), conn.cursor() as cur:
        pipeline.build_api(cur, PRODUCT, sorted(values))


def test_a_partition_per_month_bounded_by_the_month_across_a_year_end_and_a_leap_day(schema):
    with schema.cursor() as cur:
        created = pipeline.ensure_partitions(cur, API, [date(2025, 12, 31), date(2026, 1, 1),
                                                       date(2024, 2, 29), date(2026, 1, 31)])
        assert created == [f"{API}_y2024m02", f"{API}_y2025m12", f"{API}_y2026m01"]
        assert pipeline.ensure_partitions(cur, API, [date(2026, 1, 15)]) == []  # already there
    assert _bounds(schema, API) == {
        "metrics_api_y2024m02": "FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')",
        "metrics_api_y2025m12": "FOR VALUES FROM ('2025-12-01') TO ('2026-01-01')",
        "metrics_api_y2026m01": "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')",
    }
    # each partition has the parent's indexes and autovacuum tuned to a month's rows
    options = schema.execute("select reloptions from pg_class where oid = %s::regclass",
                             (f"{API}_y2026m01",)).fetchone()[0]
    assert "autovacuum_vacuum_scale_factor=0.02" in options
    assert "autovacuum_analyze_scale_factor=0.01" in options
    indexes = schema.execute("select count(*) from pg_index where indrelid = %s::regclass",
                             (f"{API}_y2026m01",)).fetchone()[0]
    assert indexes == 3  # the primary key, (domain, metric_name, metric_date, entity_id), (domain, entity_id, ...)
    # a date of a month with no partition is refused, never stored somewhere else
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition"):
        schema.execute("insert into entity.metrics_api (metric_date, domain, entity_type, entity_id, metric_name, "
                       "metric_value, unit, importance_tier, direction) values ('2026-02-01', 'product', "
                       "'product', 'all', 'daily_active_users', 1, 'users', 'tier_1', 'higher_is_better')")


def test_comparisons_read_across_partitions_at_a_year_end(schema):
    _values(schema, {date(2025, 12, 1): 40, date(2025, 12, 25): 70, date(2025, 12, 31): 100,
                     date(2026, 1, 1): 90})
    row = schema.execute(
        "select tableoid::regclass::text, value_1d_ago, value_7d_ago, value_1m_ago, pct_change_1d "
        "from entity.metrics_api where metric_date = '2026-01-01' and metric_name = 'daily_active_users'"
    ).fetchone()
    # stored in January's partition, compared with December's values in December's partition
    assert row == ("metrics_api_y2026m01", Decimal(100), Decimal(70), Decimal(40), Decimal("-10.00"))
    assert set(_bounds(schema, API)) == {"metrics_api_y2025m12", "metrics_api_y2026m01"}  # the months it wrote
    # each new month was written first and attached after: its indexes, built at the attach, are
    # the parent's three, valid; its CHECK of the bounds let the attach skip a scan
    for part in ("metrics_api_y2025m12", "metrics_api_y2026m01"):
        indexes = schema.execute("select i.indisvalid, pg_get_indexdef(i.indexrelid) from pg_index as i "
                                 "where i.indrelid = %s::regclass", (f"entity.{part}",)).fetchall()
        assert len(indexes) == 3 and all(valid for valid, _ in indexes), indexes
        assert any("INCLUDE (metric_value, importance_tier)" in d for _, d in indexes)
        assert schema.execute("select pg_get_constraintdef(oid) from pg_constraint where conrelid = %s::regclass "
                              "and contype = 'c'", (f"entity.{part}",)).fetchone()[0].startswith("CHECK")
    # the view reads them through the parent: one row per value
    assert schema.execute("select metric_date, metric_value from entity.metrics_unified_domains "
                          "where metric_date >= '2025-12-31' order by 1").fetchall() == [
        (date(2025, 12, 31), Decimal(100)), (date(2026, 1, 1), Decimal(90))]


def test_an_earlier_layer_is_migrated_with_every_value(schema):
    """A warehouse migrated by an earlier version has plain tables, and metrics_unified_domains
    is a table of its own (a copy of metrics_api's first columns): the migration moves
    metrics_api's rows into monthly partitions and replaces the unified table by the view, in the
    migration's one transaction. A slice the old table had but metrics_api never got is built
    again by the next fan-in."""
    _values(schema, {date(2026, 2, 28): 5, date(2026, 3, 1): 6, date(2026, 3, 31): 7, date(2026, 3, 15): 8})
    # 03-15 was in the old unified table only (its metrics_api slice never built)
    schema.execute("delete from entity.metrics_api where metric_date = '2026-03-15'")
    schema.execute("delete from metrics_ops.api_slices where metric_date = '2026-03-15'")
    dump = schema.execute(f"select t.*::text from {API} as t order by 1").fetchall()  # noqa: S608
    assert len(dump) == 3
    # the earlier version's shape: plain tables with their indexes
    schema.execute(f"create table entity.metrics_api_plain (like {API} including defaults)")
    schema.execute(f"insert into entity.metrics_api_plain select * from {API}")  # noqa: S608
    schema.execute(f"drop view {UNIFIED}")
    schema.execute(f"drop table {API}")
    schema.execute("alter table entity.metrics_api_plain rename to metrics_api")
    schema.execute(f"alter table {API} add primary key (metric_date, domain, entity_id, metric_name)")
    schema.execute("create index metrics_api_metric_idx on entity.metrics_api (domain, metric_name, metric_date)")
    schema.execute("create index metrics_api_entity_idx on entity.metrics_api (domain, entity_id, metric_date)")
    schema.execute(f"create table {UNIFIED} as select metric_date, domain, entity_type, entity_id, entity_name, "
                   f"metric_name, metric_value, importance_tier, unit from {API}")  # noqa: S608
    schema.execute(f"insert into {UNIFIED} values ('2026-03-15', 'product', 'product', 'all', null, "
                   "'daily_active_users', 8, 'tier_1', 'users')")
    schema.execute(f"alter table {UNIFIED} add primary key (metric_date, domain, entity_id, metric_name)")
    schema.execute("delete from metrics_ops.schema_version")  # as after an upgrade: the schema hash differs

    assert pipeline.ensure_schema(schema)
    assert schema.execute("select relkind from pg_class where oid = %s::regclass", (API,)).fetchone()[0] == "p"
    assert schema.execute(f"select t.*::text from {API} as t order by 1").fetchall() == dump  # noqa: S608
    assert set(_bounds(schema, API)) == {"metrics_api_y2026m02", "metrics_api_y2026m03"}
    assert schema.execute("select to_regclass('entity.metrics_api_unpartitioned')").fetchone()[0] is None
    assert schema.execute("select relkind from pg_class where oid = %s::regclass", (UNIFIED,)).fetchone()[0] == "v"
    # the earlier metric index gave way to the covering one, on the table and every partition
    indexes = {r[0]: r[1] for r in schema.execute(
        "select c.relname, pg_get_indexdef(c.oid) from pg_index as i join pg_class as c on c.oid = i.indexrelid "
        "where i.indrelid = any(array(select inhrelid from pg_inherits where inhparent = %s::regclass) "
        "|| %s::regclass)", (API, API)).fetchall()}
    covering = [d for d in indexes.values() if "(domain, metric_name, metric_date, entity_id)" in d]
    assert len(covering) == 3 and all(d.startswith("CREATE UNIQUE INDEX metrics_api_")
                                      and d.endswith("INCLUDE (metric_value, importance_tier)") for d in covering)
    assert not [n for n in indexes if n.startswith("metrics_api_metric_idx")]
    # 03-15 is stale again, and the next fan-in builds it from the domain table
    assert pipeline.stale_slices(schema) == {"product": [date(2026, 3, 15)]}
    assert pipeline.build_unified(schema, "fan-in") == {"product": 1}
    assert schema.execute(f"select metric_date, metric_value from {UNIFIED} where metric_date >= '2026-03-01' "  # noqa: S608
                          "order by 1").fetchall() == [(date(2026, 3, 1), 6), (date(2026, 3, 15), 8), (date(2026, 3, 31), 7)]
    # the reader function over the unified view still answers
    assert schema.execute("select entity.metric_value_as_of('product', 'daily_active_users', date '2026-03-01', "
                          "'all', now())").fetchone()[0] == 6


def test_a_layer_with_the_date_first_primary_key_gets_the_unique_key_and_keeps_every_row(schema):
    """Until the unique key metrics_api_key, metrics_api had a primary key on the same columns in
    date-first order and a covering index on the key's columns: the migration builds the key on
    the table and every partition, drops the two, adds the BRIN index on metric_date, and a
    duplicate row is refused as before."""
    _values(schema, {date(2026, 2, 28): 5, date(2026, 3, 1): 6, date(2026, 3, 31): 7})
    dump = schema.execute(f"select t.*::text from {API} as t order by 1").fetchall()  # noqa: S608
    schema.execute("drop index entity.metrics_api_key")
    schema.execute("drop index entity.metrics_api_date_idx")
    schema.execute(f"alter table {API} add primary key (metric_date, domain, entity_id, metric_name)")
    schema.execute(f"create index metrics_api_metric_value_idx on {API} (domain, metric_name, metric_date, entity_id) "
                   "include (metric_value, importance_tier)")
    schema.execute("delete from metrics_ops.schema_version")  # as after an upgrade: the schema hash differs

    assert pipeline.ensure_schema(schema)
    assert schema.execute(f"select t.*::text from {API} as t order by 1").fetchall() == dump  # noqa: S608
    # per table, its indexes' definitions without their names (a partition's are named by PostgreSQL)
    indexes: dict[str, set[str]] = {}
    for table, definition in schema.execute(
            "select (select c.relname from pg_class as c where c.oid = i.indrelid), regexp_replace(pg_get_indexdef(i.indexrelid), "
            "'INDEX \\S+ ON (ONLY )?\\S+ ', 'INDEX ON t ') from pg_index as i "
            "where i.indrelid = any(array(select inhrelid from pg_inherits where inhparent = %s::regclass) "
            "|| %s::regclass)", (API, API)).fetchall():
        indexes.setdefault(table, set()).add(definition)
    assert indexes == dict.fromkeys(["metrics_api", "metrics_api_y2026m02", "metrics_api_y2026m03"], {
        "CREATE UNIQUE INDEX ON t USING btree (domain, metric_name, metric_date, entity_id) "
        "INCLUDE (metric_value, importance_tier)",
        "CREATE INDEX ON t USING btree (domain, entity_id, metric_date)",
        "CREATE INDEX ON t USING brin (metric_date)"})
    assert [r[0] for r in schema.execute(
        "select c.relname from pg_index as i join pg_class as c on c.oid = i.indexrelid "
        "where i.indrelid = %s::regclass order by 1", (API,)).fetchall()] == [
        "metrics_api_date_idx", "metrics_api_entity_idx", "metrics_api_key"]
    assert schema.execute("select count(*) from pg_constraint where conrelid = %s::regclass and contype = 'p'",
                          (API,)).fetchone()[0] == 0
    with pytest.raises(psycopg.errors.UniqueViolation), schema.transaction():
        schema.execute(f"insert into {API} select * from {API} where metric_date = '2026-03-01'")  # noqa: S608


def test_attaching_a_month_never_makes_a_reader_wait(schema, pg_server):
    """A reader in the middle of a long transaction on the unified view (a dashboard's query,
    an analyst's session) neither blocks the fan-in attaching a new month, nor waits for the
    fan-in's open transaction that attached it."""
    _values(schema, {date(2026, 3, 31): 1})
    kwargs = {"host": schema.info.host, "dbname": schema.info.dbname, "user": schema.info.user}
    with psycopg.connect(**kwargs) as reader, psycopg.connect(**kwargs) as writer:
        assert reader.execute("select count(*) from entity.metrics_unified_domains").fetchone()[0] == 1
        # reader's transaction stays open, holding its ACCESS SHARE lock on the parent
        writer.execute("set lock_timeout = '2s'")
        with writer.cursor() as cur:
            assert pipeline.ensure_partitions(cur, API, [date(2026, 4, 1)]) == [f"{API}_y2026m04"]
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
    assert set(_bounds(schema, API)) == {"metrics_api_y2026m03", "metrics_api_y2026m04"}


def _month_builds(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "select c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
        "where n.nspname = 'metrics_staging' and c.relkind = 'r' and c.relname like 'metrics\\_api\\_build\\_%' order by 1").fetchall()]


def test_months_built_at_once_are_attached_together_or_not_at_all(schema, monkeypatch):
    """The fan-in builds a range's new months on connections of their own, which commit each
    month into metrics_staging; the fan-in's one transaction attaches them. When it fails after
    that (here: the attach waits for another session's lock past the lock timeout), readers see
    none of the range, nothing is recorded as built, and the next fan-in drops the months left
    behind and builds the range again. A month's comparisons read the months beside it and the
    month before the range (built earlier, attached)."""
    put_values(schema, PRODUCT, "daily_active_users", {date(2026, 1, 31): 5})
    assert pipeline.build_unified(schema, "fan-in-0") == {"product": 1}
    put_values(schema, PRODUCT, "daily_active_users",
               {date(2026, 2, 1): 6, date(2026, 2, 28): 7, date(2026, 3, 31): 9})
    monkeypatch.setenv("METRICS_LOCK_TIMEOUT", "1s")
    with psycopg.connect(**schema.info.get_parameters()) as holder:
        # as another session's VACUUM, ANALYZE or ATTACH of metrics_api would hold it
        holder.execute(f"lock table {API} in share update exclusive mode")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            pipeline.build_unified(schema, "fan-in-1")
        assert len(_month_builds(schema)) == 2  # February and March, built and committed by the workers
        holder.rollback()
    assert set(_bounds(schema, API)) == {"metrics_api_y2026m01"}
    assert schema.execute(f"select count(*) from {UNIFIED}").fetchone()[0] == 1  # noqa: S608
    assert pipeline.stale_slices(schema) == {"product": [date(2026, 2, 1), date(2026, 2, 28), date(2026, 3, 31)]}

    assert pipeline.build_unified(schema, "fan-in-2") == {"product": 3}
    assert _month_builds(schema) == []
    assert set(_bounds(schema, API)) == {"metrics_api_y2026m01", "metrics_api_y2026m02", "metrics_api_y2026m03"}
    # 02-01 - 1 day = 01-31 (5), a month built before; 03-31 - 1 month = 02-28 (7), a month built
    # beside it; 02-28 - 1 month = 01-28 and 02-28 - 7 days = 02-21 (no rows)
    assert schema.execute(f"select metric_date, metric_value, value_1d_ago, value_7d_ago, value_1m_ago, "  # noqa: S608
                          f"change_1m, pct_change_1m from {API} order by 1").fetchall() == [
        (date(2026, 1, 31), 5, None, None, None, None, None),
        (date(2026, 2, 1), 6, 5, None, None, None, None),
        (date(2026, 2, 28), 7, None, None, None, None, None),
        (date(2026, 3, 31), 9, None, None, 7, 2, Decimal("28.57"))]
    assert pipeline.stale_slices(schema) == {}
    assert schema.execute("select metric_date, row_count from metrics_ops.api_slices order by 1").fetchall() == [
        (date(2026, 1, 31), 1), (date(2026, 2, 1), 1), (date(2026, 2, 28), 1), (date(2026, 3, 31), 1)]
    # each month has the parent's three indexes, built by its worker and adopted by ATTACH, and
    # autovacuum is on for it again once attached
    assert [r[0] for r in schema.execute(
        "select c.relname from pg_index as i join pg_class as c on c.oid = i.indexrelid "
        "join pg_inherits as h on h.inhrelid = i.indexrelid where i.indrelid = %s::regclass order by 1",
        (f"{API}_y2026m02",)).fetchall()] == [
        "metrics_api_y2026m02_date_idx", "metrics_api_y2026m02_entity_idx", "metrics_api_y2026m02_key"]
    for month in ("02", "03"):
        options = schema.execute("select reloptions from pg_class where oid = %s::regclass",
                                 (f"{API}_y2026m{month}",)).fetchone()[0]
        assert "autovacuum_vacuum_insert_scale_factor=0.02" in options
        assert not [o for o in options if o.startswith("autovacuum_enabled")]
