"""The warehouse steps of a domain refresh and of the fan-in, as plain functions on a psycopg
connection (autocommit on; each step opens its own transaction). Airflow tasks and tests call
the same functions. Python only orchestrates: every row is computed and moved inside Postgres.

A domain day flows: check_sources -> refresh_state -> build_staging + validate (one task, one
connection) -> publish.
The build writes the run's own slice of metrics_staging.<table> (keyed by a stage id derived
from the run id, so two runs of one date never share rows and every task can be retried);
publish swaps that slice into entity.<table> in one transaction, so readers see the old day or
the new day and a failed validation leaves the last good data in place.

Every session sets its own search_path, time zone (UTC), lock_timeout, statement_timeout and
idle-in-transaction timeout (`session_settings`): the layer never depends on the warehouse's or
the role's defaults, and a long reader can delay a step by at most the lock timeout. DDL runs
only in the migrate step, when the registry's schema hash differs from the one applied, and
when the fan-in attaches a new month's partition of the long table metrics_api (`build_api`:
written first, then attached; a lock readers never wait for; a backfill's new months are
written as tables of metrics_staging on connections of their own, then moved and attached).
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import re
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

from psycopg import sql

from metrics_layer import catalog, sqlrender
from metrics_layer.dates import utc_today
from metrics_layer.errors import BuildError, SourceContractError, WarehouseBusy, describe, is_transient
from metrics_layer.paths import SQL_DIR
from metrics_layer.registry import Domain, load_registry

log = logging.getLogger(__name__)

WAREHOUSE_CONN_ID = "metrics_warehouse"
ENTITY_SCHEMA = "entity"
STAGING_SCHEMA = "metrics_staging"
# the view of metrics_api the guide's queries read (sql/views/05_unified.sql); also the publish_log
# target the fan-in records a date under, once every domain's slice of it is built
UNIFIED_TABLE = "metrics_unified_domains"
API_TABLE = "metrics_api"
SEARCH_PATH = '"$user", public, entity'
# abandoned staged slices (a run killed for good) are swept after this long
STAGE_TTL = timedelta(days=2)
# metrics_api's inputs: the columns of the temporary table api_target (filled by unified/api_target.sql
# from a domain table, or by api/target_kept.sql from metrics_api) and the query that fills
# api_prior (pipeline.build_api)
API_TARGET_COLUMNS = ("metric_date date, domain text, entity_type text, entity_id text, entity_name text, "
                      "metric_name text, metric_value numeric, importance_tier text, unit text, "
                      "direction text, additive boolean")
API_PRIOR = "api/prior.sql"
# the long table, one row per entity, metric and day: partitioned by month of metric_date
PARTITIONED_TABLES = (f"{ENTITY_SCHEMA}.{API_TABLE}",)
# A month's partition is vacuumed and analyzed by autovacuum after 2% (1%) of its rows changed,
# instead of the default 20% (10%) of a table: a rewritten day's dead rows are cleaned and a new
# day enters the statistics within minutes, not weeks (a rerun day's dead versions made the
# guide's per-day query read 450,000 buffers instead of 63,000 at SCALE=10, bench/).
PARTITION_OPTIONS = ("autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02, "
                     "autovacuum_analyze_scale_factor = 0.01")


def session_settings() -> dict[str, str]:
    """Per-session settings of every connection the layer opens (env overrides in brackets):
    lock_timeout [METRICS_LOCK_TIMEOUT], statement_timeout [METRICS_STATEMENT_TIMEOUT],
    idle_in_transaction_session_timeout [METRICS_IDLE_TIMEOUT]."""
    return {
        "search_path": SEARCH_PATH,
        "timezone": "UTC",
        "lock_timeout": os.environ.get("METRICS_LOCK_TIMEOUT", "30s"),
        "statement_timeout": os.environ.get("METRICS_STATEMENT_TIMEOUT", "30min"),
        "idle_in_transaction_session_timeout": os.environ.get("METRICS_IDLE_TIMEOUT", "10min"),
        "application_name": "metrics_layer",
    }


def apply_session_settings(conn) -> None:
    """Set `session_settings()` on `conn` in one round trip (session level, not per transaction).
    On PostgreSQL 14+ the server also checks every 5 s that the client is still there, so a
    killed task's statement is cancelled instead of running on."""
    settings = session_settings()
    if conn.info.server_version >= 140000:
        settings["client_connection_check_interval"] = "5s"
    names = list(settings)
    select = ", ".join("set_config(%s, %s, false)" for _ in names)
    args = [x for name in names for x in (name, settings[name])]
    with conn.cursor() as cur:
        cur.execute(f"select {select}", args)  # noqa: S608 - placeholders only
    if not conn.autocommit:
        conn.commit()


def transient_retrying(what: str, attempts: int | None = None):
    """tenacity's Retrying for transient errors: exponential backoff (2, 4, 8 s ...), each retry
    logged with the error; permanent errors are re-raised at once."""
    import tenacity

    attempts = attempts or int(os.environ.get("METRICS_TRANSIENT_ATTEMPTS", "4"))

    def _log(state: tenacity.RetryCallState) -> None:
        log.warning("%s: transient error (%s); retry %d of %d in %.0fs", what,
                    describe(state.outcome.exception()), state.attempt_number, attempts - 1,
                    state.next_action.sleep if state.next_action else 0)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=1, min=2, max=30),
        before_sleep=_log,
        reraise=True,
    )


def connect(conn_id: str = WAREHOUSE_CONN_ID, *, autocommit: bool = True):
    """A psycopg connection for the Airflow connection `conn_id` (every extra of the connection
    kept: socket host, sslmode, options ...), with the layer's session settings."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return _opened(lambda: PostgresHook(postgres_conn_id=conn_id).get_conn(), f"connect to {conn_id}",
                   autocommit)


def _opened(open_conn, what: str, autocommit: bool = True):
    """`open_conn()` with the layer's session settings, transient errors retried."""
    for attempt in transient_retrying(what):
        with attempt:
            conn = open_conn()
            try:
                conn.autocommit = autocommit
                apply_session_settings(conn)
            except BaseException:
                conn.close()
                raise
    return conn


def run(step, *args, conn_id: str = WAREHOUSE_CONN_ID, **kwargs):
    """Run `step(conn, *args, **kwargs)` on a fresh connection, retrying transient errors (a new
    connection each attempt: after a server restart the old one is gone). Every step is one
    transaction or idempotent, so a retry cannot double-apply anything."""
    for attempt in transient_retrying(getattr(step, "__name__", "step")):
        with attempt:
            with connect(conn_id) as conn:
                return step(conn, *args, **kwargs)


@dataclass(frozen=True)
class StateSpec:
    """A compact daily state: sql/state/<name>/table.sql creates metrics_state.<name> (with an
    `activity_date` column), sql/state/<name>/build.sql inserts the rows of the days in the bind
    parameter `days` into it, or into the temporary table named by the template variable
    `target` (refresh_state compares a rebuilt day there before it replaces the stored one)."""

    name: str

    @property
    def table(self) -> str:
        return f"metrics_state.{self.name}"

    @property
    def sql(self) -> str:
        return f"state/{self.name}/build.sql"

    def definition_hash(self) -> str:
        h = hashlib.sha256()
        for part in ("table.sql", "build.sql"):
            h.update((SQL_DIR / "state" / self.name / part).read_bytes())
        return h.hexdigest()[:16]


def states() -> dict[str, StateSpec]:
    return {p.name: StateSpec(p.name) for p in sorted((SQL_DIR / "state").iterdir())
            if (p / "build.sql").exists()}


def _utc(cur) -> None:
    # day boundaries are UTC days (the session is UTC already; this guards a caller's own conn)
    cur.execute("set local time zone 'UTC'")


def _advisory_xact_lock(cur, key: str, wait: str = "15min") -> None:
    """Serialize on `key` for the rest of the transaction; waiting for another run of the layer
    is normal, so the wait may exceed the session's lock_timeout (meant for readers' locks)."""
    cur.execute("select set_config('lock_timeout', %s, true)", (wait,))
    cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (key,))
    cur.execute("select set_config('lock_timeout', %s, true)", (session_settings()["lock_timeout"],))


def analyze_if_grown(cur, table: str, rows: int, share: float = 0.1) -> bool:
    """ANALYZE `table` when `rows` just written are more than `share` of what its statistics
    know (or it has none): the next statements of the same transaction, and the next run, plan
    with the real row counts instead of autovacuum's last view. A 90-day rebuild of
    metrics_api planned on stale statistics took 84 s where it takes 3 s (bench/). ANALYZE
    takes no lock readers or writers wait for."""
    cur.execute("select reltuples from pg_class where oid = %s::regclass", (table,))
    known = cur.fetchone()[0]
    if known >= 0 and rows <= share * known:
        return False
    cur.execute(f"analyze {table}")
    return True


def _month(d: date) -> date:
    return d.replace(day=1)


def _next_month(m: date) -> date:
    return (m.replace(day=28) + timedelta(days=4)).replace(day=1)


def partition_name(table: str, month: date) -> str:
    """entity.metrics_api, 2026-12-xx -> entity.metrics_api_y2026m12"""
    return f"{table}_y{month:%Y}m{month:%m}"


def partitions(cur, table: str) -> list[str]:
    """The partitions of `table`, schema-qualified, oldest month first."""
    cur.execute("select n.nspname || '.' || c.relname from pg_inherits as i "
                "join pg_class as c on c.oid = i.inhrelid join pg_namespace as n on n.oid = c.relnamespace "
                "where i.inhparent = %s::regclass order by c.relname", (table,))
    return [r[0] for r in cur.fetchall()]


def _new_month(cur, table: str, month: date) -> str:
    """A month's partition of `table`, created but not attached yet, with a CHECK constraint of
    its bounds: filled first, it is attached afterwards, when ATTACH PARTITION builds its indexes
    in bulk (from the parent's definitions) and takes the CHECK as proof of the bounds instead of
    scanning the rows. Inside the caller's transaction; nobody else sees the table before the
    commit. (A month built on a connection of its own is created by _build_month.)"""
    part = partition_name(table, month)
    schema, name = table.split(".")
    ident = sql.Identifier(*part.split("."))
    cur.execute(sql.SQL("create table {part} (like {parent} including defaults) with ({opts})").format(
        part=ident, parent=sql.Identifier(schema, name), opts=sql.SQL(PARTITION_OPTIONS)))
    cur.execute(sql.SQL("alter table {part} add {check}").format(part=ident, check=_month_check(table, month)))
    return part


def _month_check(table: str, month: date) -> sql.Composable:
    """The CHECK constraint of a month's bounds, named after its partition, which ATTACH
    PARTITION takes as proof of the bounds instead of scanning the rows."""
    return sql.SQL("constraint {check} check (metric_date >= {lo} and metric_date < {hi})").format(
        check=sql.Identifier(f"{partition_name(table, month).split('.')[1]}_month"), lo=sql.Literal(month),
        hi=sql.Literal(_next_month(month)))


def _attach_month(cur, table: str, part: str, month: date) -> None:
    schema, name = table.split(".")
    cur.execute(sql.SQL("alter table {parent} attach partition {part} for values from ({lo}) to ({hi})").format(
        parent=sql.Identifier(schema, name), part=sql.Identifier(*part.split(".")), lo=sql.Literal(month),
        hi=sql.Literal(_next_month(month))))


def ensure_partitions(cur, table: str, dates) -> list[str]:
    """Create and attach the monthly partitions of `table` (one of PARTITIONED_TABLES) that
    `dates` fall in and that do not exist yet; returns the ones created. Each is created on its
    own and then attached: ATTACH PARTITION takes a SHARE UPDATE EXCLUSIVE lock on the parent,
    which neither readers (ACCESS SHARE) nor writers wait for, where CREATE TABLE ... PARTITION
    OF would take ACCESS EXCLUSIVE. An empty table attaches without a scan; its indexes are
    created from the parent's at attach. Runs in the caller's transaction."""
    months = sorted({_month(d) for d in dates})
    if not months:
        return []
    existing = set(partitions(cur, table))
    created = []
    for m in months:
        if partition_name(table, m) in existing:
            continue
        part = _new_month(cur, table, m)
        _attach_month(cur, table, part, m)
        created.append(part)
    if created:
        log.info("%s: attached partition(s) %s", table, ", ".join(created))
    return created


def analyze_partitions(cur, table: str, dates, rows: int) -> None:
    """analyze_if_grown for each month partition of `table` that `dates` wrote to (ANALYZE of
    the partitioned parent would sample and analyze every month of history)."""
    for m in sorted({_month(d) for d in dates}):
        analyze_if_grown(cur, partition_name(table, m), rows)


def _retire_unified_table(cur) -> None:
    """After the DDL, before the reader views: metrics_unified_domains of an earlier version, a
    table (partitioned or not) holding a copy of metrics_api's first columns, is dropped, and the
    view that replaces it is created by the late statements of the same migration. Its drop's
    ACCESS EXCLUSIVE lock is taken at the end, not held through the index builds before it. Its
    slices whose metrics_api rows were never built (possible only before the fan-in wrote both in
    one transaction, or before metrics_api existed) are forgotten, so the next fan-in builds them
    from the domain tables. A view or function of the warehouse's own
    that depends on the table makes the migration fail with PostgreSQL's message naming it,
    instead of being dropped with it."""
    cur.execute("select c.relkind from pg_class as c where c.oid = to_regclass(%s)",
                (f"{ENTITY_SCHEMA}.{UNIFIED_TABLE}",))
    row = cur.fetchone()
    if not row or row[0] not in ("r", "p"):
        return
    # both bookkeeping tables exist: the DDL before this created any that was missing
    cur.execute("delete from metrics_ops.unified_slices as u where not exists (select 1 from "
                "metrics_ops.api_slices as a where a.domain = u.domain and a.metric_date = u.metric_date)")
    forgotten = cur.rowcount
    cur.execute(sql.SQL("drop table {}").format(sql.Identifier(ENTITY_SCHEMA, UNIFIED_TABLE)))
    log.warning("%s.%s: the table is replaced by a view of %s (a one-time migration; %d slice(s) "
                "without comparisons are rebuilt by the next fan-in)", ENTITY_SCHEMA, UNIFIED_TABLE,
                API_TABLE, forgotten)


def _set_aside_unpartitioned(cur) -> list[str]:
    """Before the DDL: a long table of an earlier version, not partitioned yet, is renamed (with
    its indexes) to <name>_unpartitioned, so the DDL creates the partitioned table; its rows
    are moved by _move_unpartitioned in the same migration transaction."""
    moved = []
    for table in PARTITIONED_TABLES:
        cur.execute("select c.relkind from pg_class as c where c.oid = to_regclass(%s)", (table,))
        row = cur.fetchone()
        if not row or row[0] != "r":
            continue
        schema, name = table.split(".")
        cur.execute("select i.indexrelid::regclass::text from pg_index as i where i.indrelid = %s::regclass",
                    (table,))
        for (index,) in cur.fetchall():
            index_name = index.split(".")[-1]
            cur.execute(sql.SQL("alter index {} rename to {}").format(
                sql.Identifier(schema, index_name), sql.Identifier(f"{index_name}_unpartitioned")))
        cur.execute(sql.SQL("alter table {} rename to {}").format(
            sql.Identifier(schema, name), sql.Identifier(f"{name}_unpartitioned")))
        moved.append(table)
    return moved


def _move_unpartitioned(cur, tables: list[str]) -> None:
    """After the DDL: every row of each set-aside table into the partitioned one (the months it
    holds attached first), then the old table dropped. One statement per table, inside the
    migration's transaction: readers see the old table or the new one, never half of it."""
    for table in tables:
        schema, name = table.split(".")
        old = sql.Identifier(schema, f"{name}_unpartitioned")
        cur.execute(sql.SQL("select distinct date_trunc('month', metric_date)::date from {}").format(old))
        ensure_partitions(cur, table, [r[0] for r in cur.fetchall()])
        cur.execute("select string_agg(quote_ident(attname), ', ' order by attnum) from pg_attribute "
                    "where attrelid = %s::regclass and attnum > 0 and not attisdropped", (table,))
        cols = sql.SQL(cur.fetchone()[0])
        cur.execute(sql.SQL("insert into {new} ({cols}) select {cols} from {old}").format(
            new=sql.Identifier(schema, name), cols=cols, old=old))
        log.warning("%s: moved %d rows into monthly partitions (a one-time migration)", table, cur.rowcount)
        cur.execute(sql.SQL("drop table {}").format(old))
        for part in partitions(cur, table):
            cur.execute(sql.SQL("analyze {}").format(sql.Identifier(*part.split("."))))


def lock_holders(conn) -> list[str]:
    """Other sessions holding locks on the layer's tables, longest transaction first."""
    with conn.cursor() as cur:
        cur.execute(
            r"""
            select distinct a.pid, a.usename, a.state,
                   extract(epoch from now() - a.xact_start)::int as seconds,
                   left(regexp_replace(a.query, '\s+', ' ', 'g'), 100) as query
            from pg_locks as l
            join pg_class as c on c.oid = l.relation
            join pg_namespace as n on n.oid = c.relnamespace
            join pg_stat_activity as a on a.pid = l.pid
            where l.granted and a.pid <> pg_backend_pid()
              and n.nspname in ('entity', 'metrics_staging', 'metrics_state', 'metrics_ops')
            order by seconds desc nulls last
            limit 5
            """
        )
        return [f"pid {pid} ({user}, {state}, in transaction {secs}s): {query}"
                for pid, user, state, secs, query in cur.fetchall()]


class _busy_on_lock_timeout:
    """Turn a lock timeout into WarehouseBusy naming the sessions in the way (transient)."""

    def __init__(self, conn, what: str):
        self.conn, self.what = conn, what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        import psycopg

        if isinstance(exc, psycopg.errors.LockNotAvailable):
            holders = lock_holders(self.conn)
            raise WarehouseBusy(
                f"{self.what}: could not get a lock within lock_timeout "
                f"({session_settings()['lock_timeout']}); nothing was changed. Sessions holding "
                f"locks on the layer's tables: {'; '.join(holders) or 'none any more'}. "
                "The step is retried with backoff."
            ) from exc
        return False


# ---------------------------------------------------------------------------- schema

def stage_key(run_id: str | None) -> str:
    """The staging slice of a run: a short hash of its run id (safe as a SQL literal)."""
    return "s" + hashlib.sha1((run_id or "adhoc").encode()).hexdigest()[:15]


def _create_table_sql(schema: str, domain: Domain) -> list[str]:
    cols = domain.table_columns
    staging = schema == STAGING_SCHEMA
    body = ",\n    ".join(f"{c} {t}" for c, t in cols.items())
    prefix = "stage_id text not null,\n    staged_at timestamptz not null default now(),\n    " if staging else ""
    key = (("stage_id",) if staging else ()) + domain.key_columns
    stmts = [
        f"create table if not exists {schema}.{domain.table} (\n    {prefix}{body},\n"
        f"    primary key ({', '.join(key)})\n)"
    ]
    # new registry entries become new (null) columns; nothing is ever dropped automatically
    stmts += [f"alter table {schema}.{domain.table} add column if not exists {c} {t}"
              for c, t in cols.items()]
    return stmts


def schema_statements() -> list[str]:
    """Every DDL statement of the layer, in order (what `migrate` applies)."""
    stmts = [p.read_text() for p in sorted((SQL_DIR / "ops").glob("*.sql"))]
    stmts += [p.read_text() for p in sorted((SQL_DIR / "state").glob("*/table.sql"))]
    for domain in load_registry().values():
        for schema in (ENTITY_SCHEMA, STAGING_SCHEMA):
            stmts += _create_table_sql(schema, domain)
    return stmts


def late_statements() -> list[str]:
    """DDL that needs the catalog table: views and functions for readers, then the BI role."""
    return [p.read_text() for p in sorted((SQL_DIR / "views").glob("*.sql"))] + [
        (SQL_DIR / "roles" / "metrics_reader.sql").read_text()]


def schema_hash() -> str:
    h = hashlib.sha256()
    # a state's build SQL too: a state built by other SQL is dropped and rebuilt (migrate)
    for part in [*schema_statements(), repr(catalog.catalog_rows()), *late_statements(),
                 *(spec.definition_hash() for spec in states().values())]:
        h.update(part.encode())
    return h.hexdigest()[:16]


def applied_schema_hash(conn) -> str | None:
    with conn.cursor() as cur:
        cur.execute("select to_regclass('metrics_ops.schema_version') is not null")
        if not cur.fetchone()[0]:
            return None
        cur.execute("select schema_hash from metrics_ops.schema_version")
        row = cur.fetchone()
        return row[0] if row else None


def ensure_schema(conn) -> bool:
    """Migrate when the registry's schema differs from the one applied; otherwise one cheap
    read and no lock on any table. Returns True when DDL ran."""
    if applied_schema_hash(conn) == schema_hash():
        return False
    migrate(conn)
    return True


def _drop_redefined_states(cur) -> None:
    """A state whose table or build SQL changed since it was built is derived data in an old
    shape: drop it and forget its days (the next runs rebuild the days they read)."""
    cur.execute("select to_regclass('metrics_ops.state_definitions') is not null")
    known = {}
    if cur.fetchone()[0]:
        cur.execute("select state, definition_hash from metrics_ops.state_definitions")
        known = dict(cur.fetchall())
    for name, spec in states().items():
        cur.execute("select to_regclass(%s) is not null", (spec.table,))
        if cur.fetchone()[0] and known.get(name) != spec.definition_hash():
            log.warning("state %s: its definition changed; dropped, its days are rebuilt as runs need them",
                        name)
            cur.execute(f"drop table {spec.table}")
            cur.execute("select to_regclass('metrics_ops.state_days') is not null")
            if cur.fetchone()[0]:
                cur.execute("delete from metrics_ops.state_days where state = %s", (name,))


def migrate(conn) -> str:
    """Create the layer's schemas, bookkeeping, state and every registry table (new registry
    metrics become new columns), refresh entity.metrics_catalog, grant the read-only role, and
    record the schema hash. One transaction; a lock timeout names the sessions in the way."""
    target = schema_hash()
    with _busy_on_lock_timeout(conn, "schema migration"), conn.transaction(), conn.cursor() as cur:
        _advisory_xact_lock(cur, "metrics_layer:ddl")
        if applied_schema_hash(conn) == target:  # another run migrated while we waited
            return target
        started = time.monotonic()
        for domain in load_registry().values():
            # staging from before per-run slices (no stage_id): transient data, recreate it
            cur.execute("select to_regclass(%s) is not null and not exists (select 1 from "
                        "information_schema.columns where table_schema = %s and table_name = %s "
                        "and column_name = 'stage_id')",
                        (f"{STAGING_SCHEMA}.{domain.table}", STAGING_SCHEMA, domain.table))
            if cur.fetchone()[0]:
                cur.execute(f"drop table {STAGING_SCHEMA}.{domain.table}")
        _drop_redefined_states(cur)
        unpartitioned = _set_aside_unpartitioned(cur)
        for stmt in schema_statements():
            cur.execute(stmt)
        _move_unpartitioned(cur, unpartitioned)
        cur.execute(
            "insert into metrics_ops.state_definitions (state, definition_hash, applied_at) "
            "select s, h, now() from unnest(%s::text[], %s::text[]) as t (s, h) on conflict (state) "
            "do update set definition_hash = excluded.definition_hash, applied_at = excluded.applied_at",
            (list(states()), [spec.definition_hash() for spec in states().values()]))
        catalog.sync_catalog(cur)
        # last, so that its lock (readers of the old table wait) lasts only until the commit
        _retire_unified_table(cur)
        # reader views, then the read-only BI role (without CREATEROLE its DO block only notices)
        for stmt in late_statements():
            cur.execute(stmt)
        cur.execute(
            "insert into metrics_ops.schema_version (id, schema_hash, applied_at) "
            "values (true, %s, now()) on conflict (id) do update "
            "set schema_hash = excluded.schema_hash, applied_at = excluded.applied_at",
            (target,),
        )
    log.info("schema migrated to %s in %.2fs", target, time.monotonic() - started)
    return target


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
        # a derived table may read a domain table that has not published yet (its KPIs stay NULL)
        for src in (s for s in domain.sources if not (domain.derived and s.startswith("entity."))):
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

@dataclass(frozen=True)
class StateRefresh:
    """What a state refresh did: the days rebuilt, and those of them whose rows changed (a day
    built before whose checksum differs now: late or corrected source rows)."""

    rebuilt: list[date]
    changed: list[date]


def _state_checksums(cur, table: str, days: list[date]) -> dict[date, str]:
    # order-independent: a sum of row hashes and a count, no sort of the day's rows
    cur.execute(f"select activity_date, count(*)::text || ':' || sum(hashtextextended(t::text, 0))::text "  # noqa: S608
                f"from {table} as t where activity_date = any(%s) group by 1", (days,))
    return dict(cur.fetchall())


def _build_state_days(cur, spec: StateSpec, new: list[date], rebuilt: list[date],
                      before: dict[date, str | None]) -> tuple[int, dict[date, str], list[date]]:
    """Write the state's `new` days (never built) straight into its table, and build its
    `rebuilt` days (the late-data lookback, a rerun of history) into a temporary table first: a
    day whose rows are the same as the stored ones (checksum) is left as it is, so a daily
    lookback that finds no late data rewrites no row (no index churn, no dead rows for
    autovacuum). Returns the rows written to the state table, every day's checksum and the
    rebuilt days that changed."""
    rows = 0
    if new:
        cur.execute(sqlrender.render(spec.sql), {"days": new, "first_day": new[0], "last_day": new[-1]})
        rows += cur.rowcount
    after = _state_checksums(cur, spec.table, new) if new else {}
    if not rebuilt:
        return rows, after, []
    cur.execute(f"create temp table state_rebuild (like {spec.table}) on commit drop")
    cur.execute(sqlrender.render(spec.sql, target="state_rebuild"),
                {"days": rebuilt, "first_day": rebuilt[0], "last_day": rebuilt[-1]})
    sums = _state_checksums(cur, "pg_temp.state_rebuild", rebuilt)
    after.update(sums)
    differ = [d for d in rebuilt if before.get(d) != sums.get(d, "0:")]
    if differ:
        cur.execute(f"delete from {spec.table} where activity_date = any(%s)", (differ,))  # noqa: S608
        cur.execute(f"insert into {spec.table} select * from pg_temp.state_rebuild "  # noqa: S608
                    "where activity_date = any(%s)", (differ,))
        rows += cur.rowcount
    cur.execute("drop table pg_temp.state_rebuild")
    return rows, after, differ


def refresh_state(conn, state: str, metric_dates: date | list[date], lookback_days: int = 3,
                  window_days: int = 30, fresh_after=None, missing_only: bool = False) -> StateRefresh:
    """Make sure the state has every day of the windows [X - window, X) of the metric_dates X.
    Rebuilt: days missing from it; the last `lookback_days` days before each X (late rows),
    unless built after `fresh_after` (the time the run was requested: another run, e.g. of a
    domain sharing the state, rebuilt them since); and, for a historical X (older than the
    lookback from today: a backfill or a rerun of history), every day of its window built
    before `fresh_after`, so a backfill after fixing raw data reads fresh state while the runs of
    one backfill rebuild each day once. A range of dates rebuilds exactly the days a sequence of
    single-date runs would, in one statement.

    A rebuilt day whose rows differ from the last build (checksum) gets a new state version;
    publications record the version they read (`affected_dates`). `missing_only`: build only
    the days of the windows the state does not hold.

    The days are built and recorded in one transaction, or, when there are many (state_pieces:
    a backfill's), in contiguous pieces on connections of their own, each piece's rows and
    records committed together while this transaction holds the state's lock: a failed piece
    leaves the days of the pieces built before it or beside it (a retry of the run finds them
    fresh and builds the rest)."""
    spec = states()[state]
    dates = sorted({metric_dates} if isinstance(metric_dates, date) else set(metric_dates))
    first, last = dates[0], dates[-1]
    window_start = first - timedelta(days=window_days)
    window = [window_start + timedelta(days=i) for i in range((last - window_start).days)]
    # the latest historical date: every day of the windows before it reads fresh state
    historical = [x for x in dates if x < utc_today() - timedelta(days=lookback_days)]
    history_end = historical[-1] if historical and fresh_after is not None else window_start
    with conn.transaction(), conn.cursor() as cur:
        _utc(cur)
        # one builder per state at a time: concurrent runs would rebuild the same days
        _advisory_xact_lock(cur, f"metrics_layer:state:{state}")
        cur.execute(
            "select activity_date, built_at, checksum from metrics_ops.state_days "
            "where state = %s and activity_date >= %s and activity_date < %s",
            (state, window_start, last),
        )
        built = {d: (at, checksum) for d, at, checksum in cur.fetchall()}
        lookback_from = first - timedelta(days=lookback_days)

        def stale(d: date) -> bool:
            if d not in built:
                return True
            if missing_only:
                return False
            fresh = fresh_after is not None and built[d][0] >= fresh_after
            return not fresh and (d >= lookback_from or d < history_end)

        days = [d for d in window if stale(d)]
        if not days:
            return StateRefresh([], [])
        started = time.monotonic()
        before = {d: c for d, (_, c) in built.items() if d in days}
        # days built before checksums were kept: hash their rows as they are now
        legacy = [d for d in days if d in built and before[d] is None]
        if legacy:
            before.update({d: "0:" for d in legacy} | _state_checksums(cur, spec.table, legacy))
        # only a rebuilt day that differs from what was read before is a change (a new version):
        # a day built for the first time (or again after its state was dropped for a new
        # definition) was read by no publication, and republishing the dates around it would
        # read windows the state may not fully hold yet
        pieces = state_pieces(days)
        workers = min(build_workers(), len(pieces))
        if workers == 1:
            rows, changed = _write_state_days(cur, spec, days, built, before)
        else:
            # the state's lock stays held by this transaction while the pieces are built
            def write(c, piece: list[date]) -> tuple[int, list[date]]:
                with c.transaction(), c.cursor() as piece_cur:
                    _utc(piece_cur)
                    return _write_state_days(piece_cur, spec, piece, built, before)

            done = share_out(conn, pieces, workers, write, f"state-{state}", busy=lambda: cur.execute("select 1"))
            rows, changed = sum(r for r, _ in done), sorted(d for _, c in done for d in c)
        analyze_if_grown(cur, spec.table, rows)
    log.info("state %s: rebuilt %d day(s) %s..%s, %d rows in %.2fs%s; changed: %s",
             state, len(days), days[0], days[-1], rows, time.monotonic() - started,
             f" in {len(pieces)} pieces on {workers} connections" if workers > 1 else "",
             ", ".join(map(str, changed)) or "none")
    return StateRefresh(days, changed)


# A state refresh of at least this many days (a backfill's, a first run's) is cut into
# contiguous pieces of about this many days, built on the build connections at once, each
# connection taking the next piece: one INSERT ... SELECT runs on one core (PostgreSQL plans no
# parallel workers for it), and at SCALE=10 the 119 days of user_activity_daily a 90-day
# customer-success range reads took 26 s on one connection (bench/, P3). Pieces rather than
# halves: the days cost what their source rows cost (a backfill from the first day of data
# has empty days before it; the halves of those 119 days took 11.6 s and 21 s). A daily run's
# lookback (a few days) stays one transaction.
STATE_PIECE_DAYS = 14


def state_pieces(days: list[date]) -> list[list[date]]:
    """The days of a state refresh (sorted) cut into contiguous pieces of STATE_PIECE_DAYS days
    or a few more (one piece: fewer than twice that)."""
    return range_pieces(days, max(1, len(days) // STATE_PIECE_DAYS))


def _write_state_days(cur, spec: StateSpec, days: list[date], built: dict, before: dict[date, str | None]
                      ) -> tuple[int, list[date]]:
    """Build the state's `days` (_build_state_days) and record them in metrics_ops.state_days,
    in the caller's transaction: the rows of a day and its record commit together. Returns the
    rows written and the rebuilt days that changed (each gets a new version)."""
    rows, after, changed = _build_state_days(cur, spec, [d for d in days if d not in built],
                                             [d for d in days if d in built], before)
    cur.execute(
        "insert into metrics_ops.state_days (state, activity_date, built_at, checksum, version) "
        "select %(state)s, d, now(), coalesce(c, '0:'), "
        "       case when d = any(%(renewed)s::date[]) then nextval('metrics_ops.state_version') else 0 end "
        "from unnest(%(days)s::date[], %(sums)s::text[]) as t (d, c) "
        "on conflict (state, activity_date) do update set built_at = excluded.built_at, "
        "    checksum = excluded.checksum, "
        "    version = case when excluded.activity_date = any(%(renewed)s::date[]) "
        "                   then excluded.version else state_days.version end",
        {"state": spec.name, "days": days, "sums": [after.get(d) for d in days], "renewed": changed},
    )
    return rows, changed


def refresh_states(conn, domain: Domain, metric_dates: date | list[date], lookback_days: int | None = None,
                   fresh_after=None) -> list[date]:
    """Refresh every state the domain reads for the run's metric_dates (one date, or a range);
    return the metric_dates to build: those, plus every earlier metric_date of the domain
    already published whose window holds a state day that changed since (late data reaches the
    numbers readers already saw; each is republished and restated), whichever run rebuilt it."""
    dates = _date_list(metric_dates)
    lookback = domain.lookback_days if lookback_days is None else lookback_days
    for state in domain.states:
        refresh_state(conn, state, dates, lookback, domain.state_window_days, fresh_after)
    affected = [x for x in affected_dates(conn, domain, dates[0]) if x not in dates]
    if affected:
        # a republished date is built from its whole window: days the state lacks (dropped for a
        # new definition since) are built first
        for state in domain.states:
            refresh_state(conn, state, affected, 0, domain.state_window_days, fresh_after, missing_only=True)
    return sorted(set(affected) | set(dates))


def _date_list(metric_dates: date | list[date]) -> list[date]:
    return sorted({metric_dates} if isinstance(metric_dates, date) else set(metric_dates))


def affected_dates(conn, domain: Domain, metric_date: date) -> list[date]:
    """Published metric_dates X < D of the domain with a state day c in their window
    [X - state_window_days, X) whose version is newer than the one X's publication read."""
    if not domain.states:
        return []
    with conn.cursor() as cur:
        cur.execute(
            "select p.metric_date from metrics_ops.publish_log as p where p.target = %(t)s "
            "and p.metric_date < %(d)s and exists (select 1 from metrics_ops.state_days as s "
            "where s.state = any(%(states)s) and s.activity_date < p.metric_date "
            "and s.activity_date >= p.metric_date - %(w)s and s.version > p.state_version) order by 1",
            {"t": domain.table, "d": metric_date, "states": list(domain.states),
             "w": domain.state_window_days},
        )
        return [r[0] for r in cur.fetchall()]


def _state_version(cur, domain: Domain, metric_date: date) -> int:
    """The highest version of the state days a build of `metric_date` reads."""
    if not domain.states:
        return 0
    cur.execute("select coalesce(max(version), 0) from metrics_ops.state_days where state = any(%s) "
                "and activity_date >= %s and activity_date < %s",
                (list(domain.states), metric_date - timedelta(days=domain.state_window_days), metric_date))
    return cur.fetchone()[0]


# ---------------------------------------------------------------------------- build & publish

def build_select(domain: Domain, range_form: bool = False) -> str:
    """The domain's build query, rendered; returns exactly domain.built_columns. The range form
    (`range_build_sql`) takes `metric_dates` instead of `metric_date`."""
    return sqlrender.render(domain.range_build_sql if range_form else domain.build_sql)


def _record_build(cur, domain: Domain, dates: list[date], stage: str) -> None:
    """The build bookkeeping of `dates`: when each was built and the highest state version it
    reads, taken before the build (a state refreshed in between only makes the day stale again)."""
    for d in dates:
        cur.execute(
            "insert into metrics_ops.build_log (target, metric_date, stage_id, built_at, state_version) "
            "values (%s, %s, %s, now(), %s) on conflict (target, metric_date, stage_id) do update "
            "set built_at = excluded.built_at, state_version = excluded.state_version",
            (domain.table, d, stage, _state_version(cur, domain, d)))


def _duplicate_keys(domain: Domain, label: str, exc) -> BuildError:
    # the slice belongs to this run alone: a duplicate key is the build query's own output
    detail = re.sub(r"\(stage_id, (.*)\)=\(s[0-9a-f]+, ", r"(\1)=(", exc.diag.message_detail or "")
    return BuildError(
        f"{domain.table} for {label}: the build query produced duplicate keys "
        f"({', '.join(domain.key_columns)}): {detail.removesuffix(' already exists.')}. "
        "Check the sources for duplicated entities."
    )


def _no_rows(domain: Domain, label: str) -> BuildError:
    return BuildError(
        f"{domain.table} for {label}: the build produced no rows (no active "
        f"{domain.entity_type} as of that date). Check that the sources cover the date; "
        "nothing was published and the last good data is in place."
    )


def build_staging(conn, domain: Domain, metric_date: date, run_id: str | None = None,
                  sweep: bool = True) -> int:
    """Compute one metric_date into the run's slice of metrics_staging.<table> (one
    transaction; a retry replaces the slice). With `sweep`, slices abandoned by runs killed for
    good go too (build_dates sweeps once, before builds on several connections). Returns rows."""
    import psycopg

    cols = ", ".join(domain.built_columns)
    target = f"{STAGING_SCHEMA}.{domain.table}"
    stage = stage_key(run_id)
    started = time.monotonic()
    try:
        with conn.transaction(), conn.cursor() as cur:
            _utc(cur)
            # this run's earlier try (and slices abandoned by runs killed for good)
            if sweep:
                _sweep_staging(cur, domain)
            cur.execute(f"delete from {target} where stage_id = %s and metric_date = %s",  # noqa: S608
                        (stage, metric_date))
            _record_build(cur, domain, [metric_date], stage)
            cur.execute(
                f"insert into {target} (stage_id, {cols})\n"  # noqa: S608
                f"select %(stage_id)s, {cols} from (\n{build_select(domain)}\n) as q",
                {"metric_date": metric_date, "stage_id": stage},
            )
            rows = cur.rowcount
            # every inserted row must be for this date
            cur.execute(f"select count(*) from {target} where stage_id = %s and metric_date = %s",  # noqa: S608
                        (stage, metric_date))
            if cur.fetchone()[0] != rows:
                raise BuildError(f"{domain.table}: the build query returned rows for a metric_date "
                                 f"other than {metric_date}")
    except psycopg.errors.UniqueViolation as exc:
        raise _duplicate_keys(domain, str(metric_date), exc) from exc
    if rows == 0:
        raise _no_rows(domain, str(metric_date))
    log.info("%s %s: built %d rows into staging slice %s in %.2fs", domain.table, metric_date,
             rows, stage, time.monotonic() - started)
    return rows


def build_range_staging(conn, domain: Domain, dates: list[date], run_id: str | None = None,
                        sweep: bool = True) -> dict[date, int]:
    """Compute every date of `dates` into the run's staging slices with the domain's range form
    (`range_build_sql`: one statement for all of them), in one transaction: a retry replaces
    the slices, a failure leaves none of them. Same rows as build_staging date by date
    (tests/test_range.py). Returns {date: rows}."""
    import psycopg

    dates = sorted(set(dates))
    cols = ", ".join(domain.built_columns)
    target = f"{STAGING_SCHEMA}.{domain.table}"
    stage = stage_key(run_id)
    label = f"{dates[0]}..{dates[-1]} ({len(dates)} dates)"
    started = time.monotonic()
    try:
        with conn.transaction(), conn.cursor() as cur:
            _utc(cur)
            if sweep:
                _sweep_staging(cur, domain)
            cur.execute(f"delete from {target} where stage_id = %s and metric_date = any(%s)",  # noqa: S608
                        (stage, dates))
            _record_build(cur, domain, dates, stage)
            # hash joins: the statement's CTEs carry no statistics, and a join the planner
            # estimates at one row, run as a nested loop over a million (or merged on one of its
            # two keys), does not end
            with planner_off(cur, "enable_nestloop", "enable_mergejoin"):
                cur.execute(
                    f"insert into {target} (stage_id, {cols})\n"  # noqa: S608
                    f"select %(stage_id)s, {cols} from (\n{build_select(domain, range_form=True)}\n) as q",
                    {"metric_dates": dates, "stage_id": stage},
                )
                inserted = cur.rowcount
            cur.execute(f"select metric_date, count(*) from {target} where stage_id = %s "  # noqa: S608
                        "and metric_date = any(%s) group by metric_date", (stage, dates))
            rows = dict(cur.fetchall())
            if sum(rows.values()) != inserted:
                raise BuildError(f"{domain.table}: the range build query returned rows for a "
                                 f"metric_date outside {label}")
            empty = [d for d in dates if not rows.get(d)]
            if empty:
                raise _no_rows(domain, ", ".join(map(str, empty)))
    except psycopg.errors.UniqueViolation as exc:
        raise _duplicate_keys(domain, label, exc) from exc
    log.info("%s %s: built %d rows into staging slice %s in one statement in %.2fs", domain.table,
             label, inserted, stage, time.monotonic() - started)
    return {d: rows[d] for d in dates}


def _sweep_staging(cur, domain: Domain) -> None:
    """Delete the staged slices of runs killed for good (older than STAGE_TTL)."""
    cur.execute(f"delete from {STAGING_SCHEMA}.{domain.table} where staged_at < now() - %s",  # noqa: S608
                (STAGE_TTL,))


def build_workers() -> int:
    """Connections a range's builds use at once [METRICS_BUILD_WORKERS, default 2]."""
    value = os.environ.get("METRICS_BUILD_WORKERS", "2")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"METRICS_BUILD_WORKERS must be a whole number >= 1, not {value!r}")
    return int(value)


def _sibling(conn):
    """Another connection to `conn`'s server and database, as the same user, with the layer's
    session settings (no Airflow lookup: it may be opened where the caller has no context)."""
    import psycopg

    return _opened(lambda: psycopg.connect(**conn.info.get_parameters(), password=conn.info.password),
                   "connect a second build connection")


def share_out(conn, items: list, workers: int, do, label: str, busy=None) -> list:
    """`do(c, item)` for each of `items` on `workers` connections at once, each connection
    taking the next item until none is left; returns the results (in the order they finished).
    The connections are `conn` and workers - 1 more to its database, or, with `busy` (a
    function run every minute on `conn` meanwhile: `conn` holds a transaction that must not
    sit idle past the idle-in-transaction timeout), `workers` more; they are opened here and
    closed after. The first failure stops the others after their current item and is raised."""
    import queue
    import threading

    todo: queue.SimpleQueue = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    done: list = []
    errors: list[BaseException] = []
    failed = threading.Event()

    def work(c) -> None:
        while not failed.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.append(do(c, item))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
                errors.append(exc)
                failed.set()

    extra = [_sibling(conn) for _ in range(workers if busy else workers - 1)]
    try:
        threads = [threading.Thread(target=work, args=(c,), name=f"{label}-{i}") for i, c in enumerate(extra, 1)]
        for t in threads:
            t.start()
        if not busy:
            work(conn)
        for t in threads:
            while t.is_alive():
                t.join(60)
                if busy and t.is_alive():
                    busy()
    finally:
        for c in extra:
            c.close()
    if errors:
        raise errors[0]
    return done


# A range form reads the state of [first - window, last) once, sorted by entity and day; per day
# of state read that costs ~3.5 times what one date's build pays for a day of its window
# (product analytics at SCALE=10: 5.3 s for one date against 1.5 s, bench/, P3). A range is
# cut into one contiguous piece per build connection, each reading its own window too.
RANGE_FORM_COST = 3.5
RANGE_FORMS = ("auto", "always", "never")


def range_form_choice() -> str:
    """When a domain with a range form uses it [METRICS_RANGE_FORM: auto (default), always, never]."""
    value = os.environ.get("METRICS_RANGE_FORM", "auto")
    if value not in RANGE_FORMS:
        raise ValueError(f"METRICS_RANGE_FORM must be one of {', '.join(RANGE_FORMS)}, not {value!r}")
    return value


def range_pieces(dates: list[date], workers: int, filled: list[date] | None = None,
                 window: int = 0) -> list[list[date]]:
    """`dates` (sorted) cut into at most `workers` contiguous pieces of near-equal length; or,
    given the state days that hold rows (`filled`) and the domain's window, of near-equal cost:
    a piece of a range form costs about one unit per date and one per state day with rows its
    windows read, [first - window, last) (customer success at SCALE=10: 0.32 s a date, 0.29 s a
    state day). A backfill from the first day of data is cut later than its middle then: the
    first piece's windows reach back into days without data (its 90 dates took 28 s and 39 s
    in halves)."""
    dates = sorted(set(dates))
    n = max(1, min(workers, len(dates)))
    if filled is not None and n > 1:
        return _balanced_pieces(dates, n, sorted(filled), window)
    size, extra = divmod(len(dates), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(dates[start:end])
        start = end
    return pieces


def _balanced_pieces(dates: list[date], n: int, filled: list[date], window: int) -> list[list[date]]:
    """range_pieces by cost: the least limit at which cutting greedily (each piece as long as
    its cost stays within it) gives at most `n` pieces."""

    def cost(i: int, j: int) -> int:  # dates[i:j]
        lo = bisect.bisect_left(filled, dates[i] - timedelta(days=window))
        return j - i + max(0, bisect.bisect_left(filled, dates[j - 1]) - lo)

    def cut(limit: int) -> list[list[date]]:
        pieces, i = [], 0
        while i < len(dates):
            j = i + 1
            while j < len(dates) and cost(i, j + 1) <= limit:
                j += 1
            pieces.append(dates[i:j])
            i = j
        return pieces

    low, high = 1, cost(0, len(dates))
    while low < high:
        mid = (low + high) // 2
        if len(cut(mid)) <= n:
            high = mid
        else:
            low = mid + 1
    return cut(low)


def uses_range_form(domain: Domain, dates: list[date], workers: int) -> bool:
    """Whether `dates` are built with the domain's range form: more than one date, and (auto)
    the reads of its pieces (one per connection, each with its window) cost less than the
    per-date builds' reads spread over the same `workers` connections (a dense range of 8 or
    more dates; never a handful of dates scattered over months)."""
    choice = range_form_choice()
    if not domain.range_build_sql or len(dates) < 2 or choice == "never":
        return False
    if choice == "always":
        return True
    window = domain.state_window_days
    longest = max((p[-1] - p[0]).days + 1 for p in range_pieces(dates, workers))
    return RANGE_FORM_COST * (longest + window) < len(dates) * window / max(workers, 1)


def _state_weighted_pieces(conn, domain: Domain, dates: list[date], workers: int) -> list[list[date]]:
    """A range form's pieces (range_pieces), weighed by the days of the domain's states that
    hold rows (metrics_ops.state_days: a day's checksum starts with its row count)."""
    window = domain.state_window_days
    with conn.cursor() as cur:
        cur.execute("select distinct activity_date from metrics_ops.state_days where state = any(%s) "
                    "and coalesce(checksum, '') <> '0:' and activity_date >= %s and activity_date < %s",
                    (list(domain.states), dates[0] - timedelta(days=window), dates[-1]))
        filled = [r[0] for r in cur.fetchall()]
    return range_pieces(dates, workers, filled, window)


def build_dates(conn, domain: Domain, dates: list[date], run_id: str | None = None,
                workers: int | None = None) -> dict[date, int]:
    """Build each of `dates` into the run's staging slices, on `workers` connections at once
    (`conn` and workers - 1 more to its database, opened here and closed after). Many dates of
    a domain with a range form go through it (uses_range_form): the range cut into one
    contiguous piece per connection, each piece one statement and one transaction
    (build_range_staging). Otherwise one build_staging (one transaction) a date, each connection
    taking the next date until none is left. One statement runs on one core, and a backfill has
    the server's other cores to use (at SCALE=10 on 2 cores: bench/, P3). The slices of
    different dates never touch the same rows. The first failure stops the other connections
    after their current piece or date and is raised; what was built keeps its slices, which a
    retry replaces. Returns {date: rows}."""
    dates = sorted(set(dates))
    workers = min(build_workers() if workers is None else workers, len(dates))
    ranged = uses_range_form(domain, dates, workers)
    if workers <= 1:
        if ranged:
            return build_range_staging(conn, domain, dates, run_id)
        return {d: build_staging(conn, domain, d, run_id) for d in dates}
    with conn.transaction(), conn.cursor() as cur:
        _sweep_staging(cur, domain)

    def build(c, item) -> dict[date, int]:
        if ranged:
            return build_range_staging(c, domain, item, run_id, sweep=False)
        return {item: build_staging(c, domain, item, run_id, sweep=False)}

    rows: dict[date, int] = {}
    for built in share_out(conn, _state_weighted_pieces(conn, domain, dates, workers) if ranged else dates,
                            workers, build, f"build-{domain.name}"):
        rows.update(built)
    return {d: rows[d] for d in dates}


RUN_KINDS = {"scheduled": "scheduled rerun", "backfill": "backfill", "manual": "manual rerun",
             "asset_triggered": "asset-triggered rerun"}


def definition_hash(domain: Domain) -> str:
    """What a domain's numbers are defined by: its registry file, its build SQL (both forms, and
    the `_*.sql` macros beside them) and the build SQL of the states it reads. A republication
    under another hash is a definition change."""
    h = hashlib.sha256()
    build = SQL_DIR / domain.build_sql
    for path in [domain.path, build,
                 *([SQL_DIR / domain.range_build_sql] if domain.range_build_sql else []),
                 *sorted(build.parent.glob("_*.sql")),
                 *(SQL_DIR / states()[s].sql for s in domain.states)]:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _rerun_reason(previous_hash: str | None, current_hash: str, run_id: str | None) -> str:
    """Why a day published before is published again (when the caller does not say)."""
    if previous_hash and previous_hash != current_hash:
        return f"definition change (registry or SQL {previous_hash} -> {current_hash})"
    kind = (run_id or "").split("__", 1)[0]
    return RUN_KINDS.get(kind, "rerun")


def publish(conn, domain: Domain, dates: date | list[date], run_id: str | None = None,
            reasons: dict[date, str] | None = None) -> int:
    """Swap the run's staged slices of `dates` into entity.<table> in ONE transaction (readers see
    all of them change at once), recording every changed value in metrics_ops.restatements with
    its reason (`reasons[d]`, else derived: definition change, backfill, manual rerun ...), and
    log each publication. Idempotent: a date this run already published (a retry after the
    commit) is skipped. Two runs of one date serialize here; the later publication wins."""
    dates = [dates] if isinstance(dates, date) else sorted(set(dates))
    reasons = reasons or {}
    cols = ", ".join(domain.table_columns)
    stage = stage_key(run_id)
    current_hash = definition_hash(domain)
    total = 0
    with (_busy_on_lock_timeout(conn, f"publish {domain.table} {dates[0]}..{dates[-1]}"),
          conn.transaction(), conn.cursor() as cur):
        for d in dates:  # in date order: two runs never wait for each other in a cycle
            _advisory_xact_lock(cur, f"metrics_layer:publish:{domain.table}:{d}")
        for d in dates:
            cur.execute(f"select count(*) from {STAGING_SCHEMA}.{domain.table} "  # noqa: S608
                        "where stage_id = %s and metric_date = %s", (stage, d))
            if cur.fetchone()[0] == 0:
                cur.execute("select row_count from metrics_ops.publish_history where target = %s "
                            "and metric_date = %s and run_id is not distinct from %s "
                            "order by version desc limit 1", (domain.table, d, run_id))
                done = cur.fetchone()
                if not done:
                    raise BuildError(f"{domain.table} for {d}: nothing staged to publish for run "
                                     f"{run_id!r} (slice {stage}); run the build step of this run first")
                log.info("%s %s: already published by this run (%d rows)", domain.table, d, done[0])
                total += done[0]
                continue
            cur.execute("select definition_hash from metrics_ops.publish_history where target = %s "
                        "and metric_date = %s order by version desc limit 1", (domain.table, d))
            previous = cur.fetchone()
            reason = reasons.get(d) or _rerun_reason(previous[0] if previous else None, current_hash, run_id)
            cur.execute("select nextval('metrics_ops.publish_version')")
            version = cur.fetchone()[0]
            cur.execute(sqlrender.render("restatements/metrics_restatements.sql", d=domain),
                        {"metric_date": d, "stage_id": stage, "run_id": run_id, "version": version,
                         "reason": reason})
            restated = cur.rowcount
            cur.execute(f"delete from {ENTITY_SCHEMA}.{domain.table} where metric_date = %s", (d,))  # noqa: S608
            cur.execute(
                f"insert into {ENTITY_SCHEMA}.{domain.table} ({cols}) "  # noqa: S608
                f"select {cols} from {STAGING_SCHEMA}.{domain.table} where stage_id = %s and metric_date = %s",
                (stage, d),
            )
            rows = cur.rowcount
            cur.execute(f"delete from {STAGING_SCHEMA}.{domain.table} where stage_id = %s "  # noqa: S608
                        "and metric_date = %s", (stage, d))
            cur.execute("delete from metrics_ops.build_log where target = %s and metric_date = %s "
                        "and stage_id = %s returning state_version", (domain.table, d, stage))
            read = cur.fetchone()
            _log_publication(cur, domain.table, [d], run_id, rows, version=version,
                             definition_hash_=current_hash, state_version=read[0] if read else 0)
            total += rows
            log.info("%s %s: published %d rows; %d value(s) restated%s", domain.table, d, rows,
                     restated, f" ({reason})" if restated else "")
        analyze_if_grown(cur, f"{ENTITY_SCHEMA}.{domain.table}", total)
    return total


def _log_publication(cur, target: str, dates: list[date], run_id: str | None, rows: int,
                     version: int | None = None, definition_hash_: str | None = None,
                     state_version: int = 0) -> None:
    """One new version per (target, date); the latest in publish_log, every one in history."""
    cur.execute(
        """
        with pub as (
            insert into metrics_ops.publish_history
                (version, target, metric_date, run_id, row_count, published_at, definition_hash,
                 state_version)
            select coalesce(%(version)s, nextval('metrics_ops.publish_version')), %(target)s, d,
                   %(run_id)s, %(rows)s, clock_timestamp(), %(hash)s, %(state_version)s
            from unnest(%(dates)s::date[]) as d
            returning version, target, metric_date, run_id, row_count, published_at, state_version
        )
        insert into metrics_ops.publish_log
            (target, metric_date, published_at, run_id, row_count, version, state_version)
        select target, metric_date, published_at, run_id, row_count, version, state_version from pub
        on conflict (target, metric_date) do update set published_at = excluded.published_at,
            run_id = excluded.run_id, row_count = excluded.row_count, version = excluded.version,
            state_version = excluded.state_version
        """,
        {"target": target, "run_id": run_id, "rows": rows, "dates": dates, "version": version,
         "hash": definition_hash_, "state_version": state_version},
    )


def late_data_reasons(dates: list[date], run_dates: date | list[date]) -> dict[date, str]:
    """The restatement reason of each republished earlier date of a run for `run_dates`."""
    run = _date_list(run_dates)
    label = f"{run[0]}" if len(run) == 1 else f"{run[0]}..{run[-1]}"
    return {d: f"late data: state changed before {d}, caught by the lookback of the run for "
               f"{label}" for d in dates if d not in run}


def stage(conn, domain: Domain, metric_dates: date | list[date], lookback_days: int | None = None,
          run_id: str | None = None, fresh_after=None) -> int:
    """Schema, source checks, state and build: the run's days (and any earlier published day
    whose window saw changed state) staged and ready to validate. Returns the rows staged for
    the run's dates."""
    run = _date_list(metric_dates)
    ensure_schema(conn)
    check_sources(conn, domain)
    rows = build_dates(conn, domain, refresh_states(conn, domain, run, lookback_days, fresh_after), run_id)
    return sum(rows[d] for d in run)


def refresh_domain(conn, domain: Domain, metric_dates: date | list[date], run_id: str | None = None,
                   lookback_days: int | None = None, fresh_after=None) -> int:
    """Everything but validation, for tools and tests that want published days in one call
    (late-data republications included). Returns the rows published for the run's dates."""
    run = _date_list(metric_dates)
    ensure_schema(conn)
    check_sources(conn, domain)
    dates = refresh_states(conn, domain, run, lookback_days, fresh_after)
    rows = build_dates(conn, domain, dates, run_id)
    publish(conn, domain, dates, run_id, late_data_reasons(dates, run))
    return sum(rows[d] for d in run)


# ---------------------------------------------------------------------------- fan-in

def stale_slices(conn) -> dict[str, list[date]]:
    """Per domain, the metric_dates whose latest publication is newer than the one its slice of
    metrics_unified_domains was built from (or that have no slice yet)."""
    domains = list(load_registry().values())
    with conn.cursor() as cur:
        cur.execute(
            """
            select d.domain, p.metric_date
            from unnest(%(tables)s::text[], %(names)s::text[]) as d (target, domain)
            join metrics_ops.publish_log as p on p.target = d.target
            left join metrics_ops.unified_slices as s
                on s.domain = d.domain and s.metric_date = p.metric_date
            where coalesce(p.version, 0) > coalesce(s.source_version, -1)
            order by 1, 2
            """,
            {"tables": [d.table for d in domains], "names": [d.name for d in domains]},
        )
        out: dict[str, list[date]] = {}
        for name, d in cur.fetchall():
            out.setdefault(name, []).append(d)
        return out


def build_unified(conn, run_id: str | None = None, force_dates: list[date] | None = None) -> dict:
    """Rebuild the stale (domain, metric_date) slices of the long table metrics_api (and so of the
    view metrics_unified_domains), plus every domain's slice of `force_dates`, with the later
    dates whose comparisons point at them, in one transaction. Each slice's values are read from
    its domain table by the statement that records the publication version it read, from the
    same snapshot: a domain publishing meanwhile stays stale and is picked up by the next run.
    Returns {domain: values of the stale dates}."""
    from psycopg.pq import TransactionStatus

    registry = load_registry()
    # months built on connections of their own need this transaction to be a top-level one (a
    # snapshot is exported from it); a caller's outer transaction (tests) keeps them in turn
    top_level = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction(), conn.cursor() as cur:
        _advisory_xact_lock(cur, "metrics_layer:unified")
        _sweep_month_builds(cur)
        work = stale_slices(conn)
        for name in registry:
            if force_dates:
                work[name] = sorted(set(work.get(name, [])) | set(force_dates))
        # a domain in the registry but never built yet has no table: nothing to unpivot
        cur.execute("select t, c.reltuples from unnest(%s::text[]) as t "
                    "join pg_class as c on c.oid = to_regclass('entity.' || t)",
                    ([d.table for d in registry.values()],))
        size = dict(cur.fetchall())
        summary: dict[str, int] = {}
        all_dates: set[date] = set()
        # the largest domain first: a month new to metrics_api is written before it is indexed
        # (build_api), and the domains after the first one write into it indexed
        order = [(registry[name], dates) for name, dates in
                 sorted(work.items(), key=lambda kv: -size.get(registry[kv[0]].table, 0))
                 if dates and registry[name].table in size]
        # a backfill of new history: the new months of every domain without period totals at once
        done = build_new_months(cur, order, run_id) if top_level else {}
        for domain, dates in order:
            name = domain.name
            if name not in done:
                build_api(cur, domain, dates, run_id)
            cur.execute("select coalesce(sum(row_count), 0) from metrics_ops.unified_slices "
                        "where domain = %s and metric_date = any(%s)", (name, dates))
            summary[name] = int(cur.fetchone()[0])
            all_dates.update(dates)
        if all_dates:
            # each slice's row count was recorded by the statement that read it; their sum is
            # the day's values without counting ~150,000 index entries a day again
            cur.execute("select metric_date, sum(row_count)::bigint from metrics_ops.unified_slices "
                        "where metric_date = any(%s) group by 1", (sorted(all_dates),))
            for d, n in cur.fetchall():
                _log_publication(cur, UNIFIED_TABLE, [d], run_id, n)
    if not summary:
        log.info("%s: nothing stale, nothing rebuilt", API_TABLE)
    return summary


# ---------------------------------------------------------------------------- comparisons

def api_dates(cur, domain: Domain, changed: list[date]) -> list[date]:
    """The metric_dates of metrics_api to rebuild when the values of `changed` dates changed:
    those dates and every later date whose comparisons point at one of them (1 and 7 days, 1
    month (clamped: several dates can point at a month's last day), 1 year, 364 days; and the
    rest of the year for the period-to-date totals of additive metrics), among the dates the
    domain has slices of."""
    additive = any(m.additive for m in domain.unified)
    cur.execute(
        """
        select distinct c.x
        from unnest(%(changed)s::date[]) as s (d)
        cross join lateral (
            select s.d as x
            union all select s.d + 1
            union all select s.d + 7
            union all select s.d + 364
            union all
            select g::date from generate_series(s.d + 28, s.d + 31, interval '1 day') as g
            where (g - interval '1 month')::date = s.d
            union all
            select g::date from generate_series(s.d + 365, s.d + 366, interval '1 day') as g
            where (g - interval '1 year')::date = s.d
            union all
            select g::date from generate_series(s.d + 1, s.d + 732, interval '1 day') as g
            where %(additive)s
        ) as c
        where c.x = any(%(changed)s::date[])
            or exists (select 1 from metrics_ops.unified_slices as u
                       where u.domain = %(domain)s and u.metric_date = c.x)
        order by 1
        """,
        {"changed": sorted(changed), "additive": additive, "domain": domain.name},
    )
    return [r[0] for r in cur.fetchall()]


def api_insert(api_table: str, additive: bool, chunk: list[date]) -> tuple[str, dict]:
    """The metrics_api insert of the consecutive dates `chunk` (api/metrics_api.sql: into
    `api_table`, from pg_temp.api_target and api_prior) and its parameters; run it under
    merge_joins_off."""
    return (sqlrender.render("api/metrics_api.sql", api_table=api_table, additive=additive),
            {"first": chunk[0], "last": chunk[-1]})


@contextmanager
def planner_off(cur, *settings: str):
    """Planner settings (enable_*) off for the statements inside, then the session's values back
    (both local to the transaction; an error leaves them to the rollback)."""
    saved = {}
    for name in settings:
        cur.execute("select current_setting(%s)", (name,))
        saved[name] = cur.fetchone()[0]
        cur.execute("select set_config(%s, 'off', true)", (name,))
    yield
    for name, value in saved.items():
        cur.execute("select set_config(%s, %s, true)", (name, value))


@contextmanager
def merge_joins_off(cur):
    """Merge joins off for the statements inside (planner_off). metrics_api's comparisons are
    five hash joins, which the planner never chooses itself: it estimates their buckets from one
    key column's distinct values."""
    with planner_off(cur, "enable_mergejoin"):
        yield


def build_api(cur, domain: Domain, changed: list[date], run_id: str | None = None,
              at_once: bool = False) -> list[date]:
    """Rebuild entity.metrics_api for the `changed` dates of `domain` (their values read from the
    domain table, their slices recorded in metrics_ops.unified_slices) and for the dates whose
    comparisons point at them (their values kept), inside the caller's transaction, a month of
    dates at a time, oldest first: a month's comparisons read the earlier months already
    rebuilt. A month with no partition yet (a backfill's, or a new month's first day) is written
    into a new table without indexes, then attached: its indexes are built once, in bulk, instead
    of row by row (at SCALE=10 a month of metrics_api took 47.2 s into an indexed partition and
    25.9 s unindexed with the indexes built after). With `at_once` (the caller's transaction is
    a top-level one, see build_unified), a range of new months of a domain without period
    totals is built several months at a time instead (build_new_months). Returns the dates
    rebuilt."""
    if at_once:
        built = build_new_months(cur, [(domain, changed)], run_id)
        if domain.name in built:
            return built[domain.name]
    dates = api_dates(cur, domain, changed)
    if not dates:
        return []
    table = f"{ENTITY_SCHEMA}.{API_TABLE}"
    counts = _build_months_in_turn(cur, domain, _by_month(dates), set(changed), set(partitions(cur, table)), run_id)
    _record_api_slices(cur, domain, dates, set(changed), counts, run_id)
    return dates


def _by_month(dates: list[date]) -> dict[date, list[date]]:
    # a month of dates a statement: a year's rebuild hashes a month of comparisons at a time
    months: dict[date, list[date]] = {}
    for d in dates:
        months.setdefault(_month(d), []).append(d)
    return months


def build_new_months(cur, work: list[tuple[Domain, list[date]]], run_id: str | None = None) -> dict[str, list[date]]:
    """build_api for the domains of `work` (each with its changed dates) whose rebuild falls in months
    that have no partition yet (a backfill of new history) and that have no period totals: their
    months built METRICS_BUILD_WORKERS at a time, every such domain's rows of a month on one
    connection (_build_months_at_once), when there are two months or more. Returns the dates
    rebuilt of each domain it built, by name (the others are left to build_api in turn)."""
    table = f"{ENTITY_SCHEMA}.{API_TABLE}"
    existing = set(partitions(cur, table))

    def all_new(dates: list[date]) -> bool:
        return not any(partition_name(table, m) in existing for m in _by_month(dates))

    # the rebuilt dates include the changed ones: a domain whose changed dates touch a month
    # that exists (the daily run's) is left to build_api without reading its rebuilt dates here
    candidates = [(domain, changed) for domain, changed in work
                  if changed and not any(m.additive for m in domain.unified) and all_new(changed)]
    if min(build_workers(), len({_month(d) for _, changed in candidates for d in changed})) < 2:
        return {}
    eligible: list[tuple[Domain, list[date], dict[date, list[date]]]] = []
    for domain, changed in candidates:
        dates = api_dates(cur, domain, changed)
        if all_new(dates):
            # each month's changed dates (a new month has no row of a date to keep)
            new = set(changed)
            eligible.append((domain, dates, {m: ds for m, chunk in _by_month(dates).items()
                                             if (ds := [d for d in chunk if d in new])}))
    workers = min(build_workers(), len({m for *_, by_month in eligible for m in by_month}))
    if workers < 2:
        return {}
    counts = _build_months_at_once(cur, [(domain, by_month) for domain, _, by_month in eligible], run_id, workers)
    changed_of = {domain.name: set(changed) for domain, changed in work}
    for domain, dates, _ in eligible:
        _record_api_slices(cur, domain, dates, changed_of[domain.name], counts[domain.name], run_id)
    return {domain.name: dates for domain, dates, _ in eligible}


def _record_api_slices(cur, domain: Domain, dates: list[date], new: set[date], counts: dict[date, int],
                       run_id: str | None) -> None:
    cur.execute(
        """
        insert into metrics_ops.api_slices (domain, metric_date, built_at, run_id, row_count)
        select %(domain)s, d, now(), %(run_id)s, n
        from unnest(%(dates)s::date[], %(counts)s::bigint[]) as t (d, n)
        on conflict (domain, metric_date) do update set built_at = excluded.built_at,
            run_id = excluded.run_id, row_count = excluded.row_count
        """,
        {"domain": domain.name, "dates": dates, "counts": [counts.get(d, 0) for d in dates], "run_id": run_id},
    )
    log.info("%s: rebuilt %s for %d date(s) %s..%s (%d of them republished)", API_TABLE, domain.name,
             len(dates), dates[0], dates[-1], len(new & set(dates)))


def _build_months_in_turn(cur, domain: Domain, months: dict[date, list[date]], new: set[date],
                          existing: set[str], run_id: str | None) -> dict[date, int]:
    """build_api's months one after the other on the caller's connection; returns the rows
    written per date."""
    additive = any(m.additive for m in domain.unified)
    table = f"{ENTITY_SCHEMA}.{API_TABLE}"
    # the inputs in two small temporary tables with exact statistics (see api/metrics_api.sql)
    cur.execute(f"create temp table api_target ({API_TARGET_COLUMNS}) on commit drop")
    if additive:  # the period totals' lookups of the dates being built
        cur.execute("create index on pg_temp.api_target (metric_name, entity_id, metric_date)")
    counts: dict[date, int] = {}
    for n, (month, chunk) in enumerate(months.items()):
        if n:
            # Emptied in place: a table created in this transaction is truncated at once, where
            # a dropped one keeps its files until the commit (a year's rebuild kept twelve months
            # of them, ~24 GB at SCALE=10, and filled the disk)
            cur.execute("truncate pg_temp.api_target, pg_temp.api_prior")
        fresh, kept = [d for d in chunk if d in new], [d for d in chunk if d not in new]
        if fresh:
            cur.execute(sqlrender.render("unified/api_target.sql", d=domain), {"dates": fresh, "run_id": run_id})
        if kept:  # read before the delete below
            cur.execute(sqlrender.render("api/target_kept.sql"), {"domain": domain.name, "dates": kept})
        cur.execute(f"delete from {table} "  # noqa: S608
                    "where domain = %s and metric_date = any(%s)", (domain.name, chunk))
        prior, params = sqlrender.render(API_PRIOR), {"domain": domain.name, "dates": chunk}
        if n:
            cur.execute(f"insert into pg_temp.api_prior {prior}", params)  # noqa: S608
        else:
            cur.execute(f"create temp table api_prior on commit drop as {prior}", params)
        cur.execute("analyze pg_temp.api_target, pg_temp.api_prior")
        part = partition_name(table, month)
        detached = part not in existing
        if detached:
            _new_month(cur, table, month)
            existing.add(part)
        into = part.split(".")[1] if detached else API_TABLE
        with merge_joins_off(cur):
            cur.execute(*api_insert(into, additive, chunk))
        written = cur.rowcount
        # one row written per api_target row: the dates' counts without counting metrics_api again
        cur.execute("select metric_date, count(*) from pg_temp.api_target group by metric_date")
        counts.update(cur.fetchall())
        if detached:
            _attach_month(cur, table, part, month)
            log.info("%s: attached partition %s (written, then indexed in bulk)", table, part)
        # the next month's comparisons and totals read these rows: plan them with their counts
        analyze_partitions(cur, table, chunk, written)
    cur.execute("truncate pg_temp.api_target, pg_temp.api_prior")
    cur.execute("drop table pg_temp.api_target, pg_temp.api_prior")
    return counts


# the tables of months built on connections of their own, in metrics_staging until attached
MONTH_BUILD_PREFIX = f"{API_TABLE}_build_"


def _sweep_month_builds(cur) -> None:
    """Drop the month tables a failed fan-in left in metrics_staging (its workers commit their
    month before the fan-in attaches it). Under the fan-in's lock: none is in use."""
    cur.execute("select c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
                "where n.nspname = %s and c.relkind = 'r' and c.relname like %s",
                (STAGING_SCHEMA, MONTH_BUILD_PREFIX.replace("_", r"\_") + "%"))
    for (name,) in cur.fetchall():
        cur.execute(sql.SQL("drop table {}").format(sql.Identifier(STAGING_SCHEMA, name)))
        log.warning("%s.%s: dropped, a month a failed fan-in built and never attached", STAGING_SCHEMA, name)


def _index_statements(cur, table: str, part: str, prefix: str) -> list[tuple[sql.Composable, bool]]:
    """The statements that give `part` the indexes and constraints of the partitioned `table`'s
    indexes, which ATTACH PARTITION then adopts instead of building them; each named as the
    parent's with `prefix` in place of the parent's name (metrics_api_key -> <prefix>_key), each
    with whether the index is unique."""
    cur.execute("select c.relname, pg_get_indexdef(i.indexrelid), pg_get_constraintdef(k.oid), i.indisunique "
                "from pg_index as i "
                "join pg_class as c on c.oid = i.indexrelid "
                "left join pg_constraint as k on k.conindid = i.indexrelid and k.conrelid = i.indrelid "
                "where i.indrelid = %s::regclass order by c.relname", (table,))
    out: list[tuple[sql.Composable, bool]] = []
    parent = table.split(".")[1]
    ident = sql.Identifier(*part.split("."))
    for index, indexdef, constraint, unique in cur.fetchall():
        name = sql.Identifier(prefix + index.removeprefix(parent))
        if constraint:
            out.append((sql.SQL("alter table {} add constraint {} " + constraint).format(ident, name), unique))
        else:
            m = re.match(r"CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ (USING .*)$", indexdef)
            if not m:
                raise BuildError(f"{table}: cannot copy the index definition {indexdef!r}")
            out.append((sql.SQL("create " + (m.group(1) or "").lower() + "index {} on {} " + m.group(2))
                        .format(name, ident), unique))
    return out


def _sorted_by_database(cur, names: list[str]) -> list[str]:
    """`names` in the order the database sorts text (its collation, not Python's)."""
    cur.execute("select array_agg(n order by n) from unnest(%s::text[]) as n", (names,))
    return cur.fetchone()[0] or []


def _build_month(c, work: list[tuple[Domain, list[date]]], snapshot: str, month: date, build: str) -> dict:
    """One month of build_api on connection `c`, in a transaction of its own on the fan-in's
    `snapshot`: the rows of each domain's changed dates of the month (`work`;
    unified/api_months.sql, from the domain table) into the new table metrics_staging.`build`,
    with the partition's CHECK constraint, indexes and statistics, committed for the fan-in to
    attach. Returns, per domain, the rows written and the publication version read per date."""
    import psycopg

    table = f"{ENTITY_SCHEMA}.{API_TABLE}"
    c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    counts: dict[str, dict[date, int]] = {}
    versions: dict[str, dict[date, int]] = {}
    part = f"{STAGING_SCHEMA}.{build}"
    ident = sql.Identifier(*part.split("."))
    with c.transaction(), c.cursor() as cur:
        cur.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))
        # the rows in the order of the table's unique key (domain, metric_name, metric_date,
        # entity_id), as the database sorts its text: each domain's query (unified/api_months.sql)
        # gives its rows in that order, the domains in name order, all written by one CREATE
        # TABLE ... AS, which appends every row after the one before. Building the key then
        # finds its rows sorted: 3 s for a month at SCALE=10, against 38.6 s from rows written in
        # date order and 12 s from rows an INSERT put on earlier pages now and then (bench/, P3).
        by_name = {domain.name: (domain, dates) for domain, dates in work}
        queries, params = [], {}
        for i, name in enumerate(_sorted_by_database(cur, list(by_name))):
            domain, dates = by_name[name]
            metric = {m.name: m for m in domain.unified}
            metrics = [metric[n] for n in _sorted_by_database(cur, list(metric))]
            query = sqlrender.render("unified/api_months.sql", d=domain, metrics=metrics)
            for key, value in (("dates", dates), ("first", dates[0]), ("last", dates[-1])):
                query = query.replace(f"%({key})s", f"%(d{i}_{key})s")
                params[f"d{i}_{key}"] = value
            queries.append(sql.SQL("(") + sql.SQL(query) + sql.SQL(")"))
        # each column cast to the parent's type, and NOT NULL where the parent has it, as
        # ATTACH PARTITION requires
        cur.execute("select attname, format_type(atttypid, atttypmod), attnotnull from pg_attribute "
                    "where attrelid = %s::regclass and attnum > 0 and not attisdropped order by attnum", (table,))
        columns = cur.fetchall()
        # left alone by autovacuum until attached: a worker starting on it after this commit held
        # up the fan-in's move of it for a second (deadlock_timeout)
        opts = PARTITION_OPTIONS + ", autovacuum_enabled = false"
        with merge_joins_off(cur):
            # one process: a parallel plan's Append could interleave the domains' rows
            cur.execute("set local max_parallel_workers_per_gather = 0")
            cur.execute(sql.SQL("create table {part} with ({opts}) as select {cols} from ({queries}) as q").format(
                part=ident, opts=sql.SQL(opts),
                cols=sql.SQL(", ").join(sql.SQL("q.{c}::" + kind + " as {c}").format(c=sql.Identifier(name))
                                        for name, kind, _ in columns),
                queries=sql.SQL(" union all ").join(queries)), params)
        # one scan validates them all; ATTACH PARTITION then takes the CHECK as proof of the bounds
        cur.execute(sql.SQL("alter table {part} {changes}").format(part=ident, changes=sql.SQL(", ").join(
            [sql.SQL("alter column {} set not null").format(sql.Identifier(name))
             for name, _, notnull in columns if notnull] + [sql.SQL("add ") + _month_check(table, month)])))
        for domain, dates in work:
            # the versions this snapshot read, recorded by the fan-in when it attaches the month
            cur.execute("select metric_date, coalesce(version, 0) from metrics_ops.publish_log "
                        "where target = %s and metric_date = any(%s)", (domain.table, dates))
            versions[domain.name] = dict(cur.fetchall())
        cur.execute(sql.SQL("select domain, metric_date, count(*) from {} group by 1, 2").format(ident))
        for name, d, n in cur.fetchall():
            counts.setdefault(name, {})[d] = n
        for statement, unique in _index_statements(cur, table, part, build):
            # the unique key's rows come sorted, which one sort in memory takes in a pass, where a
            # parallel build splits them into runs and merges them (October at SCALE=10: 2.7-3.5 s
            # against 4.1-4.8 s); the other indexes' sorts gain from the workers (bench/, P3)
            cur.execute(f"set local max_parallel_maintenance_workers = {0 if unique else 'default'}")
            cur.execute(statement)
        cur.execute(sql.SQL("analyze {}").format(ident))
    return {"month": month, "build": build, "counts": counts, "versions": versions}


def _build_months_at_once(cur, work: list[tuple[Domain, dict[date, list[date]]]], run_id: str | None,
                          workers: int) -> dict[str, dict[date, int]]:
    """build_api's months of a range with no partition yet, `workers` months at a time, each on
    a connection of its own (_build_month) with the rows of every domain of `work` (its changed
    dates by month), all on one snapshot of the fan-in's transaction, taken before anything of
    the domains is written. Every changed date is in these new months, so a month reads its
    comparisons' prior values from the domain table, not from the months beside it
    (unified/api_months.sql): the months do not wait for each other. The fan-in's transaction
    then moves each month into entity, attaches it and records its slices, so readers see the
    whole range at its commit or none of it. Only for domains without period totals (they read
    the earlier dates of the same year from metrics_api). One statement runs on one core: at
    SCALE=10 a 90-day range of customer success took 159 s one month after another (bench/,
    P3). Returns the rows written per domain and date."""
    table = f"{ENTITY_SCHEMA}.{API_TABLE}"
    cur.execute("select pg_export_snapshot()")
    snapshot = cur.fetchone()[0]
    stamp = secrets.token_hex(4)  # a failed fan-in's months may still be in metrics_staging
    started = time.monotonic()
    months: dict[date, list[tuple[Domain, list[date]]]] = {}
    for domain, by_month in work:
        for month, dates in by_month.items():
            months.setdefault(month, []).append((domain, dates))
    workers = min(workers, len(months))

    def build(c, item: tuple[date, list[tuple[Domain, list[date]]]]) -> dict:
        month, of_month = item
        return _build_month(c, of_month, snapshot, month, f"{MONTH_BUILD_PREFIX}{month:%Y%m}_{stamp}")

    # the longest months first; the fan-in's transaction waits meanwhile, kept from the idle timeout
    done = share_out(cur.connection, sorted(months.items(), key=lambda kv: -sum(len(ds) for _, ds in kv[1])),
                     workers, build, "api-months", busy=lambda: cur.execute("select 1"))
    counts: dict[str, dict[date, int]] = {domain.name: {} for domain, _ in work}
    for built in sorted(done, key=lambda b: b["month"]):
        part = partition_name(table, built["month"])
        cur.execute(sql.SQL("alter table {} set schema {}").format(
            sql.Identifier(STAGING_SCHEMA, built["build"]), sql.Identifier(ENTITY_SCHEMA)))
        cur.execute(sql.SQL("alter table {} rename to {}").format(
            sql.Identifier(ENTITY_SCHEMA, built["build"]), sql.Identifier(part.split(".")[1])))
        # its indexes named as ATTACH names them (metrics_api_y2026m02_key, ...)
        cur.execute("select c.relname from pg_index as i join pg_class as c on c.oid = i.indexrelid "
                    "where i.indrelid = %s::regclass", (part,))
        for (index,) in cur.fetchall():
            cur.execute(sql.SQL("alter index {} rename to {}").format(
                sql.Identifier(ENTITY_SCHEMA, index),
                sql.Identifier(index.replace(built["build"], part.split(".")[1], 1))))
        _attach_month(cur, table, part, built["month"])
        cur.execute(sql.SQL("alter table {} reset (autovacuum_enabled)").format(sql.Identifier(*part.split("."))))
        for name, versions in built["versions"].items():
            got = built["counts"].get(name, {})
            cur.execute(
                """
                insert into metrics_ops.unified_slices (domain, metric_date, source_version, built_at, run_id,
                    row_count)
                select %(domain)s, d, v, now(), %(run_id)s, n
                from unnest(%(dates)s::date[], %(versions)s::bigint[], %(counts)s::bigint[]) as t (d, v, n)
                on conflict (domain, metric_date) do update set source_version = excluded.source_version,
                    built_at = excluded.built_at, run_id = excluded.run_id, row_count = excluded.row_count
                """,
                {"domain": name, "run_id": run_id, "dates": list(versions), "versions": list(versions.values()),
                 "counts": [got.get(d, 0) for d in versions]},
            )
            counts[name].update(got)
    log.info("%s: built %d month(s) of %s on %d connections and attached them in %.1fs", table, len(done),
             ", ".join(domain.name for domain, _ in work), workers, time.monotonic() - started)
    return counts


# ---------------------------------------------------------------------------- derived tables

def derived_versions(conn, domain: Domain, force_dates: list[date] | None = None) -> dict[date, int]:
    """The metric_dates of a derived table (the company overview) to rebuild, with the highest
    publication version of its domain tables for each: dates some domain (re)published after the
    derived row was built, plus `force_dates`."""
    tables = [s.split(".", 1)[1] for s in domain.sources if s.startswith("entity.")]
    with conn.cursor() as cur:
        cur.execute(
            """
            select p.metric_date, max(coalesce(p.version, 0))
            from metrics_ops.publish_log as p
            left join metrics_ops.derived_slices as s
                on s.target = %(target)s and s.metric_date = p.metric_date
            where p.target = any(%(tables)s)
            group by p.metric_date, s.source_version
            having max(coalesce(p.version, 0)) > coalesce(s.source_version, -1)
                or p.metric_date = any(%(force)s::date[])
            order by 1
            """,
            {"target": domain.table, "tables": tables, "force": force_dates or []},
        )
        return dict(cur.fetchall())


def record_derived(conn, domain: Domain, versions: dict[date, int], run_id: str | None) -> None:
    conn.execute(
        "insert into metrics_ops.derived_slices (target, metric_date, source_version, built_at, run_id) "
        "select %s, d, v, now(), %s from unnest(%s::date[], %s::bigint[]) as t (d, v) "
        "on conflict (target, metric_date) do update set source_version = excluded.source_version, "
        "built_at = excluded.built_at, run_id = excluded.run_id",
        (domain.table, run_id, list(versions), list(versions.values())),
    )

