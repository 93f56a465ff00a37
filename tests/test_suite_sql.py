"""The suites evaluated in SQL (metrics_layer.suite_sql, the hot path) give exactly the verdicts
Great Expectations gives: on every domain's real published day and on a copy broken on purpose
(negative, huge and missing values, a duplicated row, a value outside its set), check by check:
success, what was observed (counts and sample values), what was expected, and the offending
entities named."""

from __future__ import annotations

from datetime import date

import pendulum
import pytest

from metrics_layer import seed, suite_sql, validation
from metrics_layer.registry import load_registry, source_domains

TODAY = date.today()
REGISTRY = load_registry()


@pytest.fixture(scope="module")
def published(pg_server, dagbag):
    from conftest import _connect

    conn = _connect(pg_server)
    for schema in ("raw", "entity", "metrics_staging", "metrics_state", "metrics_ops", "broken"):
        conn.execute(f"drop schema if exists {schema} cascade")
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    logical = pendulum.datetime(TODAY.year, TODAY.month, TODAY.day, tz="UTC")
    for domain in source_domains():
        assert dagbag.get_dag(domain.table).test(logical_date=logical).state == "success"
    assert dagbag.get_dag("metrics_unified").test().state == "success"
    yield conn
    conn.close()


def _broken_copy(conn, domain) -> None:
    """broken.<table>: the published day with every numeric metric of the first rows made
    negative, then huge, then null, text columns (a one-row table's scope too) outside their
    set, and a duplicated row;
    physically in id order, so both engines list offending rows in the same order."""
    cols = conn.execute("select column_name, data_type from information_schema.columns where table_schema = "
                        "'entity' and table_name = %s order by ordinal_position", (domain.table,)).fetchall()
    keys = {"metric_date", domain.id_column}
    copies = 4 if conn.execute(f"select count(*) from entity.{domain.table} where metric_date = %s",
                               (TODAY,)).fetchone()[0] < 4 else 1

    def expr(name, typ):
        if name == "metric_date" or (name in keys and typ != "text"):
            return name
        if name in keys:  # a one-row table's scope: one copy outside the set, the others distinct
            return f"case when n %% 4 = 1 then 'not-a-member' when g > 1 then {name} || '-' || g else {name} end"
        if typ in ("numeric", "integer", "bigint", "double precision"):
            return (f"case when n %% 4 = 1 then -5 when n %% 4 = 2 then 1000000 when n %% 4 = 3 then null "
                    f"else {name} end::{typ}")
        if typ == "text":
            return f"case when n %% 4 = 1 then 'not-a-member' else {name} end"
        return name

    select = ", ".join(expr(n, t) for n, t in cols)
    conn.execute("create schema if not exists broken")
    conn.execute(f"drop table if exists broken.{domain.table}")
    conn.execute(f"create table broken.{domain.table} as select {select} from (select t.*, g, "
                 f"row_number() over (order by {domain.id_column}, g) as n from entity.{domain.table} as t "
                 f"cross join generate_series(1, %s) as g where metric_date = %s) as t "
                 f"order by {domain.id_column}, g", (copies, TODAY))
    # a duplicated entity (and, on one-row tables, a second row)
    conn.execute(f"insert into broken.{domain.table} select * from broken.{domain.table} "
                 f"order by {domain.id_column} desc limit 1")


def _outcome(summary) -> dict:
    return {r.check_name: (r.success, r.observed, r.expected, r.entity) for r in summary.results}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_sql_and_gx_agree_on_a_good_and_a_broken_day(published, name):
    domain = REGISTRY[name]
    suite = validation.load_suite_json(domain)
    assert suite_sql.compile_suite(domain, suite, f"entity.{domain.table}", "true") is not None, \
        "every suite of the repository compiles to SQL"
    for schema in ("entity", "broken"):
        if schema == "broken":
            _broken_copy(published, domain)
        gx = validation.validate_day(domain, TODAY, schema=schema, engine="gx")
        sql = validation.validate_day(domain, TODAY, schema=schema, engine="sql")
        assert _outcome(sql) == _outcome(gx), f"{name} on {schema}"
        if schema == "entity":
            assert sql.success, sql.describe()
        else:
            # the broken copy fails checks of every kind the suite has
            failed = {r.details.get("type") for r in sql.results if not r.success}
            assert failed == {e["type"] for e in suite["expectations"]} - {"expect_table_row_count_to_be_between"}, \
                f"{name}: failed kinds {sorted(failed)}"
