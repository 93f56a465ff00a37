"""The read-only BI role `metrics_reader` that the migrate step creates: on a database whose own
time zone puts CURRENT_DATE on another day, it still runs the guide's queries verbatim against
today's UTC snapshot; it can read entity.* and nothing else, and cannot write even after asking
for a read-write transaction."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest

from conftest import ROOT, TEST_DB
from metrics_layer import local, pipeline, seed
from metrics_layer.registry import load_registry
from scratch_server import scratch_server

TODAY = datetime.now(UTC).date()
GUIDE_QUERIES = ROOT / "docs" / "guide_queries"
CS_TABLE = "entity.metrics_customer_success"
PRIVATE_SCHEMAS = ("raw", "metrics_staging", "metrics_state", "metrics_ops")
WRITE_REFUSED = (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege)


def other_day_zone() -> str:
    """A zone whose CURRENT_DATE is not the UTC date right now: UTC+14 (Pacific/Kiritimati) is
    a day ahead from 10:00 UTC on, UTC-12 (POSIX name Etc/GMT+12) a day behind until 12:00 UTC;
    switch at 11:00 so that either stays an hour away from its edge."""
    return "Pacific/Kiritimati" if datetime.now(UTC).hour >= 11 else "Etc/GMT+12"


def _connect(pg_server, user: str) -> psycopg.Connection:
    return psycopg.connect(host=local.socket_dir(pg_server), user=user, dbname=TEST_DB, autocommit=True)


@pytest.fixture
def published(conn):
    """Every domain published for today, and the fan-in."""
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    for domain in load_registry().values():
        assert pipeline.refresh_domain(conn, domain, TODAY) > 0, domain.table
    assert pipeline.build_unified(conn)
    return conn


@pytest.fixture
def skewed_database_zone(published):
    """The database's own time zone a day away from UTC (reset to UTC, as created, at the end)."""
    zone = other_day_zone()
    published.execute(f"alter database \"{TEST_DB}\" set timezone = '{zone}'")
    yield zone
    published.execute(f"alter database \"{TEST_DB}\" set timezone = 'UTC'")


def test_metrics_reader_sees_todays_utc_snapshot_whatever_the_database_zone(
        pg_server, published, skewed_database_zone):
    basic_query = (GUIDE_QUERIES / "01_basic_query.sql").read_text()

    # a plain connection gets the database's zone: CURRENT_DATE is another day, the guide finds nothing
    with _connect(pg_server, "postgres") as plain:
        assert plain.execute("show timezone").fetchone()[0] == skewed_database_zone
        assert plain.execute("select current_date").fetchone()[0] != TODAY
        assert plain.execute(basic_query).fetchall() == []

    with _connect(pg_server, "metrics_reader") as reader:
        settings = dict(reader.execute(
            "select name, setting from pg_settings where name in "
            "('TimeZone', 'search_path', 'default_transaction_read_only')").fetchall())
        assert settings == {"TimeZone": "UTC", "search_path": '"$user", public, entity',
                            "default_transaction_read_only": "on"}
        assert reader.execute("select current_date").fetchone()[0] == TODAY
        results = {p.stem: reader.execute(p.read_text()).fetchall()
                   for p in sorted(GUIDE_QUERIES.glob("*.sql"))}
    assert set(results) == {"01_basic_query", "02_domain_overview", "03_time_series_analysis",
                            "04_cross_domain_analysis"}

    cs_rows, total_mrr, health_scores = published.execute(
        f"select count(*), sum(current_mrr), count(customer_health_score) from {CS_TABLE} "
        "where metric_date = %s", (TODAY,)).fetchone()

    basic = results["01_basic_query"]
    assert len(basic) == 10 and all(r[0] == TODAY for r in basic)
    assert [r[2] for r in basic] == sorted(r[2] for r in basic)
    assert [r[2] for r in basic] == [r[0] for r in published.execute(
        f"select customer_health_score from {CS_TABLE} where metric_date = %s "
        "order by customer_health_score limit 10", (TODAY,)).fetchall()]

    overview = {(r[0], r[1]): r for r in results["02_domain_overview"]}
    assert {domain for domain, _ in overview} == {d.name for d in load_registry().values()}
    assert overview[("customer_success", "customer_health_score")][3] == health_scores
    assert ("product", "daily_active_users") in overview

    product = published.execute(
        "select metric_date, daily_active_users::numeric, monthly_active_users::numeric, "
        "dau_mau_ratio::numeric from entity.metrics_product_analytics where metric_date = %s",
        (TODAY,)).fetchall()
    assert results["03_time_series_analysis"] == product and len(product) == 1

    cross = results["04_cross_domain_analysis"]
    assert {r[0] for r in cross} <= {"Healthy", "Stable", "At Risk"}
    assert sum(r[1] for r in cross) == cs_rows > 0
    assert sum(r[2] for r in cross if r[2] is not None) == total_mrr


def test_metrics_reader_reads_entity_only_and_cannot_write(pg_server, published):
    # the tables readers query (a partition of the long table is read through its parent)
    entity_tables = [r[0] for r in published.execute(
        "select c.relname from pg_class as c where c.relnamespace = 'entity'::regnamespace "
        "and c.relkind in ('r', 'p') and not c.relispartition order by 1").fetchall()]
    partitions = [r[0] for r in published.execute(
        "select c.relname from pg_class as c where c.relnamespace = 'entity'::regnamespace "
        "and c.relkind = 'r' and c.relispartition order by 1").fetchall()]
    assert {p.rsplit("_y", 1)[0] for p in partitions} == {"metrics_api"}
    private_tables = [f"{s}.{t}" for s, t in published.execute(
        "select schemaname, tablename from pg_tables where schemaname = any(%s) order by 1, 2",
        (list(PRIVATE_SCHEMAS),)).fetchall()]
    # four domains, the company overview, metrics_api, the catalog (metrics_unified_domains is a view)
    assert len(entity_tables) == 7
    assert {t.split(".")[0] for t in private_tables} == set(PRIVATE_SCHEMAS)

    with _connect(pg_server, "metrics_reader") as reader:
        for table in [*entity_tables, *partitions, "metrics_unified_domains"]:
            assert reader.execute(f"select count(*) from entity.{table}").fetchone()[0] > 0, table
        for table in private_tables:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(f"select 1 from {table} limit 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("select nextval('metrics_ops.publish_version')")

        writes = [
            f"insert into {CS_TABLE} (metric_date, customer_id) values ('{TODAY}', -1)",
            f"update {CS_TABLE} set current_mrr = 0",
            f"delete from {CS_TABLE}",
            "delete from metrics_unified_domains",
            "update metrics_catalog set status = 'x'",
            f"truncate {CS_TABLE}",
            "create table entity.scratch (i int)",
            # locks that would hold up a publish
            f"select 1 from {CS_TABLE} for key share",
            f"lock table {CS_TABLE} in share mode",
        ]
        for stmt in writes:  # default_transaction_read_only (or the privileges) refuse each
            with pytest.raises(WRITE_REFUSED), reader.transaction():
                reader.execute(stmt)
        # a read-write transaction does not help: the role has no privilege to write
        for stmt in writes:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), reader.transaction():
                reader.execute("set transaction read write")
                assert reader.execute("show transaction_read_only").fetchone()[0] == "off"
                reader.execute(stmt)
        reader.execute("set default_transaction_read_only = off")
        for stmt in writes:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), reader.transaction():
                reader.execute(stmt)
    assert published.execute(f"select count(*) from {CS_TABLE} where customer_id = -1").fetchone()[0] == 0
    assert published.execute("select to_regclass('entity.scratch')").fetchone()[0] is None


def _wait_for_lock_wait(conn, dbname: str, query_part: str, thread: threading.Thread) -> None:
    for _ in range(300):
        if conn.execute("select 1 from pg_stat_activity where datname = %s and wait_event_type = 'Lock' "
                        "and query ilike %s", (dbname, f"%{query_part}%")).fetchone():
            return
        assert thread.is_alive(), f"the migration of {dbname} ended before it waited"
        time.sleep(0.1)
    pytest.fail(f"the migration of {dbname} never waited on a lock")


def test_two_databases_of_one_cluster_migrate_at_once(pg_server):
    """Two databases of one cluster (a test session each, or staging and production) apply a
    new schema version at the same time: both migrations succeed. metrics_reader is
    cluster-wide; before the fix, b's `alter role metrics_reader set ...` waited for a's
    uncommitted migration and then failed with XX000 'tuple concurrently updated'."""
    with scratch_server("a", "b") as server:
        host = local.socket_dir(server)
        conns = {db: psycopg.connect(host=host, user="postgres", dbname=db, autocommit=True)
                 for db in ("a", "b")}
        try:
            target = pipeline.migrate(conns["a"])
            assert pipeline.migrate(conns["b"]) == target
            for c in conns.values():  # a new schema version is deployed
                c.execute("update metrics_ops.schema_version set schema_hash = 'previous'")
            # a's migration stops just before its last statement (the schema_version upsert),
            # past the role SQL, uncommitted: the row lock below holds it there
            locker = psycopg.connect(host=host, user="postgres", dbname="a")
            locker.execute("select * from metrics_ops.schema_version for update")
            outcome: dict = {}

            def migrate(db: str) -> None:
                try:
                    with psycopg.connect(host=host, user="postgres", dbname=db, autocommit=True) as c:
                        outcome[db] = pipeline.migrate(c)
                except Exception as exc:  # noqa: BLE001 - re-raised below
                    outcome[db] = exc

            threads = {db: threading.Thread(target=migrate, args=(db,), daemon=True) for db in ("a", "b")}
            threads["a"].start()
            _wait_for_lock_wait(conns["a"], "a", "metrics_ops.schema_version", threads["a"])
            threads["b"].start()
            # b does not wait for a: the role's settings already match, so b touches no
            # cluster-wide row a has locked
            threads["b"].join(60)
            assert not threads["b"].is_alive(), "b's migration waited for a's"
            assert threads["a"].is_alive()
            locker.commit()
            locker.close()
            for t in threads.values():
                t.join(60)
            for result in outcome.values():
                if isinstance(result, Exception):
                    raise result
            assert outcome == {"a": target, "b": target}
        finally:
            for c in conns.values():
                c.close()
