"""Materialized view or tables maintained per metric_date? Measures both for metrics_api (the
heaviest derived relation: five self-joins of the unified table) at 90 and 365 days of history.

    .local/venv/bin/python bench/bench_materialized.py [--entities 1000] [--metrics 16]

For each history length it synthesizes a unified table (entities x metrics values per day, in
SQL), then measures:
  - MV:    REFRESH MATERIALIZED VIEW CONCURRENTLY of the same comparison query over all history
           (what a new day costs with a materialized view), and whether a reader is blocked;
  - table: pipeline.build_api for the one new metric_date (what the fan-in does each day).
Prints one line per figure and writes bench/results/materialized.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

from metrics_layer import local, pipeline, sqlrender
from metrics_layer.registry import load_registry

DB = "metrics_bench_mv"
RESULTS = Path(__file__).parent / "results"


def mv_sql() -> str:
    """The metrics_api query over every date and domain (the template without its filters)."""
    sql = sqlrender.render("api/metrics_api.sql")
    body = sql[sql.index("with\n"):]
    return body.replace("where u.domain = %(domain)s and u.metric_date = any(%(dates)s::date[])", "")


def synthesize(conn, days: int, entities: int, metrics: int, end: date) -> int:
    """Unified rows for `entities` customers x `metrics` customer-success metrics per day."""
    cs = load_registry()["customer_success"]
    names = [m.name for m in cs.unified][:metrics]
    conn.execute("truncate entity.metrics_unified_domains, entity.metrics_api, metrics_ops.unified_slices, "
                 "metrics_ops.api_slices")
    with conn.cursor() as cur:
        pipeline.ensure_partitions(cur, "entity.metrics_unified_domains",
                                   [end - timedelta(days=i) for i in range(days)])
    conn.execute(
        """
        insert into entity.metrics_unified_domains (metric_date, domain, entity_type, entity_id,
            entity_name, metric_name, metric_value, importance_tier, unit)
        select d::date, 'customer_success', 'customer', e::text, null, m, abs(hashtext(m || e || d::text) %% 1000)::numeric,
               'tier_1', 'x'
        from generate_series(%(first)s::date, %(end)s::date, interval '1 day') as d,
             generate_series(1, %(entities)s) as e, unnest(%(names)s::text[]) as m
        """,
        {"first": end - timedelta(days=days - 1), "end": end, "entities": entities, "names": names})
    conn.execute("insert into metrics_ops.unified_slices (domain, metric_date, source_version, built_at, row_count) "
                 "select 'customer_success', d::date, 0, now(), 0 from generate_series(%s::date, %s::date, "
                 "interval '1 day') as d", (end - timedelta(days=days - 1), end))
    conn.execute("analyze entity.metrics_unified_domains")
    return conn.execute("select count(*) from entity.metrics_unified_domains").fetchone()[0]


def reader_wait(conn_kwargs: dict, action) -> float:
    """Seconds a reader's `select count(*) from <relation>` waits while `action` runs."""
    waited = {}

    def read():
        time.sleep(0.2)
        with psycopg.connect(**conn_kwargs, autocommit=True) as r:
            t = time.monotonic()
            r.execute("select count(*) from bench_api_mv")
            waited["s"] = time.monotonic() - t

    reader = threading.Thread(target=read)
    reader.start()
    action()
    reader.join()
    return waited["s"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--entities", type=int, default=1000)
    p.add_argument("--metrics", type=int, default=16)
    args = p.parse_args()
    server = local.embedded_server()
    local.ensure_database(server, DB, recreate=True)
    os.environ[local.WAREHOUSE_ENV] = local.connection_json(server, DB)
    kwargs = {"host": local.socket_dir(server), "user": "postgres", "dbname": DB}
    conn = pipeline.connect()
    pipeline.ensure_schema(conn)
    cs = load_registry()["customer_success"]
    end = date(2026, 11, 26)
    figures = {"machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                           "postgres": conn.info.server_version}, "entities": args.entities,
               "metrics": args.metrics, "runs": {}}
    for days in (90, 365):
        rows = synthesize(conn, days, args.entities, args.metrics, end)
        conn.execute("drop materialized view if exists bench_api_mv")
        t = time.monotonic()
        conn.execute(f"create materialized view bench_api_mv as {mv_sql()}")
        create_s = time.monotonic() - t
        conn.execute("create unique index on bench_api_mv (metric_date, domain, entity_id, metric_name)")
        t = time.monotonic()
        conn.execute("refresh materialized view concurrently bench_api_mv")
        refresh_s = time.monotonic() - t
        blocked_concurrent = reader_wait(kwargs, lambda: conn.execute(
            "refresh materialized view concurrently bench_api_mv"))
        blocked_plain = reader_wait(kwargs, lambda: conn.execute("refresh materialized view bench_api_mv"))
        # the table path: all history built once, then one new day
        with conn.transaction(), conn.cursor() as cur:
            t = time.monotonic()
            pipeline.build_api(cur, cs, [end - timedelta(days=i) for i in range(days)])
            full_s = time.monotonic() - t
        with conn.transaction(), conn.cursor() as cur:
            t = time.monotonic()
            pipeline.build_api(cur, cs, [end])
            day_s = time.monotonic() - t
        run = {"unified_rows": rows, "mv_create_s": round(create_s, 2),
               "mv_refresh_concurrently_s": round(refresh_s, 2),
               "reader_wait_during_refresh_concurrently_s": round(blocked_concurrent, 2),
               "reader_wait_during_plain_refresh_s": round(blocked_plain, 2),
               "table_full_build_s": round(full_s, 2), "table_new_day_s": round(day_s, 3)}
        figures["runs"][days] = run
        for k, v in run.items():
            print(f"{days:>3} days  {k:<42} {v}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "materialized.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
