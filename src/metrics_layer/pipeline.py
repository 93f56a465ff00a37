"""The warehouse steps of a domain refresh and of the fan-in, as plain functions on a psycopg
connection (autocommit on; each step opens its own transaction). Airflow tasks and tests call
the same functions. Python only orchestrates: every row is computed and moved inside Postgres.

A domain day flows: check_sources -> refresh_state -> build_staging -> (validate) -> publish.
The build writes metrics_staging.<table>; publish swaps the day into entity.<table> in one
transaction, so readers see the old day or the new day and a failed validation leaves the last
good data in place.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta

from metrics_layer import catalog, sqlrender
from metrics_layer.errors import BuildError, SourceContractError
from metrics_layer.paths import SQL_DIR
from metrics_layer.registry import Domain, load_registry

log = logging.getLogger(__name__)

ENTITY_SCHEMA = "entity"
STAGING_SCHEMA = "metrics_staging"
UNIFIED_TABLE = "metrics_unified_domains"


@dataclass(frozen=True)
class StateSpec:
    """A compact daily state: sql/state/<name>/table.sql creates metrics_state.<name> (with an
    `activity_date` column), sql/state/<name>/build.sql inserts the rows of the days in the bind
    parameter `days` (the caller deletes those days first, in the same transaction)."""

    name: str

    @property
    def table(self) -> str:
        return f"metrics_state.{self.name}"

    @property
    def sql(self) -> str:
        return f"state/{self.name}/build.sql"


def states() -> dict[str, StateSpec]:
    return {p.name: StateSpec(p.name) for p in sorted((SQL_DIR / "state").iterdir())
            if (p / "build.sql").exists()}


def connect(conn_id: str = "metrics_warehouse"):
    """A psycopg connection for the Airflow connection `conn_id` (autocommit on)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    conn.autocommit = True
    return conn


def _utc(cur) -> None:
    # day boundaries are UTC days, whatever the server's or role's time zone
    cur.execute("set local time zone 'UTC'")


# ---------------------------------------------------------------------------- schema

def _create_table_sql(schema: str, domain: Domain) -> list[str]:
    cols = domain.table_columns
    body = ",\n    ".join(f"{c} {t}" for c, t in cols.items())
    stmts = [
        f"create table if not exists {schema}.{domain.table} (\n    {body},\n"
        f"    primary key ({', '.join(domain.key_columns)})\n)"
    ]
    # new registry entries become new (null) columns; nothing is ever dropped automatically
    stmts += [f"alter table {schema}.{domain.table} add column if not exists {c} {t}"
              for c, t in cols.items()]
    return stmts


def ensure_schema(conn) -> None:
    """Create the layer's schemas, bookkeeping, state and every registry table, and refresh
    entity.metrics_catalog from the registry (idempotent, one transaction)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext('metrics_layer:ddl'))")
        for path in sorted((SQL_DIR / "ops").glob("*.sql")) + sorted((SQL_DIR / "state").glob("*/table.sql")):
            cur.execute(path.read_text())
        for domain in load_registry().values():
            for schema in (ENTITY_SCHEMA, STAGING_SCHEMA):
                for stmt in _create_table_sql(schema, domain):
                    cur.execute(stmt)
        catalog.sync_catalog(cur)


# ---------------------------------------------------------------------------- sources

def check_sources(conn, domain: Domain) -> None:
    """Fail with one clear message when source tables are missing or empty."""
    with conn.cursor() as cur:
        cur.execute(
            "select s.name from unnest(%(names)s::text[]) as s(name) "
            "where to_regclass(s.name) is null order by 1",
            {"names": [_source_name(s) for s in domain.sources]},
        )
        missing = [r[0] for r in cur.fetchall()]
        if missing:
            raise SourceContractError(
                f"{domain.table}: source table(s) missing: {', '.join(missing)}. "
                "The source contract is in docs/sources.md (DDL under sql/sources/); "
                "on the embedded demo warehouse run `make seed`."
            )
        empty = []
        for src in domain.sources:
            cur.execute(f"select exists (select 1 from {_source_name(src)})")  # noqa: S608 - registry identifier
            if not cur.fetchone()[0]:
                empty.append(_source_name(src))
        if empty:
            raise SourceContractError(
                f"{domain.table}: source table(s) empty: {', '.join(empty)}. "
                "Load them (or `make seed` on the demo warehouse) before building metrics."
            )


def _source_name(qualified: str) -> str:
    schema, table = qualified.split(".")
    return f"{sqlrender.source_schema()}.{table}" if schema == "raw" else qualified


# ---------------------------------------------------------------------------- state

def refresh_state(conn, state: str, metric_date: date, lookback_days: int = 1,
                  window_days: int = 30) -> list[date]:
    """Make sure the state has every day of [D - window, D); rebuild days missing from it and
    the last `lookback_days` days (late data). Returns the days rebuilt."""
    spec = states()[state]
    window = [metric_date - timedelta(days=i) for i in range(window_days, 0, -1)]
    with conn.transaction(), conn.cursor() as cur:
        _utc(cur)
        # one builder per state at a time: concurrent runs would rebuild the same days
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"metrics_layer:state:{state}",))
        cur.execute(
            "select activity_date from metrics_ops.state_days "
            "where state = %s and activity_date >= %s and activity_date < %s",
            (state, window[0], metric_date),
        )
        built = {r[0] for r in cur.fetchall()}
        lookback_from = metric_date - timedelta(days=lookback_days)
        days = [d for d in window if d not in built or d >= lookback_from]
        if not days:
            return []
        started = time.monotonic()
        cur.execute(f"delete from {spec.table} where activity_date = any(%s)", (days,))  # noqa: S608
        cur.execute(sqlrender.render(spec.sql),
                    {"days": days, "first_day": days[0], "last_day": days[-1]})
        rows = cur.rowcount
        cur.execute(
            "insert into metrics_ops.state_days (state, activity_date, built_at) "
            "select %s, d, now() from unnest(%s::date[]) as d "
            "on conflict (state, activity_date) do update set built_at = excluded.built_at",
            (state, days),
        )
    log.info("state %s: rebuilt %d day(s) %s..%s, %d rows in %.2fs",
             state, len(days), days[0], days[-1], rows, time.monotonic() - started)
    return days


# ---------------------------------------------------------------------------- build & publish

def build_select(domain: Domain) -> str:
    """The domain's build query, rendered; returns exactly domain.built_columns."""
    return sqlrender.render(domain.build_sql)


def build_staging(conn, domain: Domain, metric_date: date) -> int:
    """Compute one metric_date into metrics_staging.<table> in one transaction. Returns rows."""
    import psycopg

    cols = ", ".join(domain.built_columns)
    target = f"{STAGING_SCHEMA}.{domain.table}"
    started = time.monotonic()
    try:
        with conn.transaction(), conn.cursor() as cur:
            _utc(cur)
            cur.execute(f"delete from {target} where metric_date = %s", (metric_date,))  # noqa: S608
            cur.execute(
                f"insert into {target} ({cols})\nselect {cols} from (\n{build_select(domain)}\n) as q",  # noqa: S608
                {"metric_date": metric_date},
            )
            rows = cur.rowcount
            # every inserted row must be for this date (other staged dates may legitimately exist:
            # a day that failed validation, or another run between build and publish)
            cur.execute(f"select count(*) from {target} where metric_date = %s", (metric_date,))  # noqa: S608
            if cur.fetchone()[0] != rows:
                raise BuildError(f"{domain.table}: the build query returned rows for a metric_date "
                                 f"other than {metric_date}")
    except psycopg.errors.UniqueViolation as exc:
        raise BuildError(
            f"{domain.table} for {metric_date}: the build produced duplicate keys "
            f"({', '.join(domain.key_columns)}): {exc.diag.message_detail}. Check the sources "
            "for duplicated entities."
        ) from exc
    if rows == 0:
        raise BuildError(
            f"{domain.table} for {metric_date}: the build produced no rows (no active "
            f"{domain.entity_type} as of that date). Check that the sources cover the date; "
            "nothing was published and the last good data is in place."
        )
    log.info("%s %s: built %d rows into staging in %.2fs", domain.table, metric_date, rows,
             time.monotonic() - started)
    return rows


def publish(conn, domain: Domain, metric_date: date, run_id: str | None = None) -> int:
    """Swap the staged day into entity.<table> in one transaction; log the publication."""
    cols = ", ".join(domain.table_columns)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))",
                    (f"metrics_layer:publish:{domain.table}:{metric_date}",))
        cur.execute(f"delete from {ENTITY_SCHEMA}.{domain.table} where metric_date = %s", (metric_date,))  # noqa: S608
        cur.execute(
            f"insert into {ENTITY_SCHEMA}.{domain.table} ({cols}) "  # noqa: S608
            f"select {cols} from {STAGING_SCHEMA}.{domain.table} where metric_date = %s",
            (metric_date,),
        )
        rows = cur.rowcount
        if rows == 0:
            raise BuildError(f"{domain.table} for {metric_date}: nothing staged to publish; "
                             "run the build first")
        cur.execute(f"delete from {STAGING_SCHEMA}.{domain.table} where metric_date = %s", (metric_date,))  # noqa: S608
        _log_publication(cur, domain.table, [metric_date], run_id, rows)
    log.info("%s %s: published %d rows", domain.table, metric_date, rows)
    return rows


def _log_publication(cur, target: str, dates: list[date], run_id: str | None, rows: int) -> None:
    cur.execute(
        "insert into metrics_ops.publish_log (target, metric_date, published_at, run_id, row_count) "
        "select %s, d, clock_timestamp(), %s, %s from unnest(%s::date[]) as d "
        "on conflict (target, metric_date) do update set published_at = excluded.published_at, "
        "run_id = excluded.run_id, row_count = excluded.row_count",
        (target, run_id, rows, dates),
    )


def stage(conn, domain: Domain, metric_date: date, lookback_days: int = 1) -> int:
    """Schema, source checks, state and build: the day staged and ready to validate."""
    ensure_schema(conn)
    check_sources(conn, domain)
    for state in domain.states:
        refresh_state(conn, state, metric_date, lookback_days, domain.state_window_days)
    return build_staging(conn, domain, metric_date)


def refresh_domain(conn, domain: Domain, metric_date: date, run_id: str | None = None,
                   lookback_days: int = 1) -> int:
    """Everything but validation, for tools and tests that want a published day in one call."""
    stage(conn, domain, metric_date, lookback_days)
    return publish(conn, domain, metric_date, run_id)


# ---------------------------------------------------------------------------- fan-in

def unified_dates(conn) -> list[date]:
    """metric_dates some domain published after the last unified build of that date."""
    tables = [d.table for d in load_registry().values()]
    with conn.cursor() as cur:
        cur.execute(
            """
            select p.metric_date
            from metrics_ops.publish_log as p
            left join metrics_ops.publish_log as u
                on u.target = %(unified)s and u.metric_date = p.metric_date
            where p.target = any(%(tables)s)
            group by p.metric_date, u.published_at
            having max(p.published_at) > coalesce(u.published_at, '-infinity')
            order by p.metric_date
            """,
            {"unified": UNIFIED_TABLE, "tables": tables},
        )
        return [r[0] for r in cur.fetchall()]


def build_unified(conn, dates: list[date], run_id: str | None = None) -> int:
    """Rebuild metrics_unified_domains for `dates` in one transaction, unpivoting every
    implemented metric of every domain whose table exists. Returns rows written."""
    if not dates:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext('metrics_layer:unified'))")
        # a domain added to the registry but never built yet has no table: nothing to unpivot
        cur.execute("select t from unnest(%s::text[]) as t where to_regclass('entity.' || t) is not null",
                    ([d.table for d in load_registry().values()],))
        existing = {r[0] for r in cur.fetchall()}
        domains = [d for d in load_registry().values() if d.table in existing]
        cur.execute(f"delete from {ENTITY_SCHEMA}.{UNIFIED_TABLE} where metric_date = any(%s)",  # noqa: S608
                    (dates,))
        sql = sqlrender.render("unified/metrics_unified_domains.sql", domains=domains)
        cur.execute(sql, {"dates": dates})
        rows = cur.rowcount
        _log_publication(cur, UNIFIED_TABLE, dates, run_id, rows)
    log.info("%s: rebuilt %d date(s) %s..%s, %d rows", UNIFIED_TABLE, len(dates), dates[0],
             dates[-1], rows)
    return rows
