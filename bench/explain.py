"""EXPLAIN (ANALYZE, BUFFERS) of the heaviest statements of a daily run, on the benchmark's data.

Run after `make bench` (its server and its long warehouse, 365 days): `make bench-explain`.
Each statement runs for real inside a transaction that is rolled back, so the warehouse is left
as it was. The plans go to bench/results/explain-scale<s>.txt; docs/benchmarks.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench import BENCH_DIR, RESULTS, SETTINGS, Warehouse, as_of, database, use_clock  # noqa: E402

from metrics_layer import local  # noqa: E402

EXPLAIN = "explain (analyze, buffers, timing, costs off, summary) "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=10.0, help="the scale whose long warehouse to explain")
    parser.add_argument("--database", help="default: the long warehouse of --scale")
    args = parser.parse_args()
    args.database = args.database or database("long", args.scale)
    server = local.embedded_server(pgdata=BENCH_DIR / "pgdata", settings=SETTINGS)
    wh = Warehouse(server, args.database)
    wh.use()
    from metrics_layer import pipeline, sqlrender
    from metrics_layer.registry import load_registry

    with wh.connect() as conn:
        meta = conn.execute("select meta from public.bench_meta where id = 1").fetchone()[0]
    day = date.fromisoformat(meta["end_date"])  # the data's last day, the day make bench measured
    registry = {d.table: d for d in load_registry().values()}
    out = [f"# {args.database}: SCALE={meta['scale']}, {meta['days']} days of history, metric_date {day}\n"]

    def plan(conn, title: str, sql: str, params: dict) -> None:
        rows = conn.execute(EXPLAIN + sql, params).fetchall()
        out.append(f"\n## {title}\n\n" + "\n".join(r[0] for r in rows) + "\n")

    with pipeline.connect() as conn:
        conn.autocommit = False
        state = pipeline.states()["user_activity_daily"]
        yesterday = day - timedelta(days=1)
        conn.execute(f"delete from {state.table} where activity_date = %s", (yesterday,))  # noqa: S608
        plan(conn, "state user_activity_daily: one day rebuilt (the daily run's state step)",
             sqlrender.render(state.sql), {"days": [yesterday], "first_day": yesterday, "last_day": yesterday})
        conn.rollback()
        for table in ("metrics_customer_success", "metrics_product_analytics", "metrics_sales"):
            plan(conn, f"{table}: the build query of one metric_date",
                 pipeline.build_select(registry[table]), {"metric_date": day})
            conn.rollback()
        # a backfill's 90 dates of product analytics in one statement (its range form, as P3 runs it)
        backfill = [day - timedelta(days=i) for i in range(89, -1, -1)]
        plan(conn, "metrics_product_analytics: the range form, 90 metric_dates in one statement",
             pipeline.build_select(registry["metrics_product_analytics"], range_form=True),
             {"metric_dates": backfill})
        conn.rollback()
        # the guide's queries first: the rolled-back rewrite of a day below leaves its index entries
        # pointing at aborted rows until VACUUM, and an index-only scan of that day then reads the heap
        queries = sorted((ROOT / "docs" / "guide_queries").glob("*.sql"))
        clock = use_clock(conn, day)
        out.append(f"\n-- guide queries: CURRENT_DATE is {day} by {clock}\n")
        conn.commit()  # the session's time zone outlives the rollbacks below
        for p in queries:
            plan(conn, f"guide query {p.stem}", as_of(p.read_text().split("\n", 1)[1], day, clock), {})
            conn.rollback()

        conn.execute("set time zone 'UTC'")
        # metrics_api for customer_success, one date: the inputs, then the insert (as build_api)
        cs = registry["metrics_customer_success"]
        conn.execute(f"create temp table api_target ({pipeline.API_TARGET_COLUMNS}) on commit drop")
        plan(conn, "metrics_api inputs: api_target (customer_success, one date, from its domain table)",
             sqlrender.render("unified/api_target.sql", d=cs), {"dates": [day], "run_id": "explain"})
        conn.execute("delete from entity.metrics_api where domain = 'customer_success' and metric_date = %s",
                     (day,))
        plan(conn, "metrics_api inputs: api_prior (the five dates its comparisons point at)",
             f"create temp table api_prior on commit drop as {sqlrender.render(pipeline.API_PRIOR)}",
             {"domain": "customer_success", "dates": [day]})
        conn.execute("analyze pg_temp.api_target, pg_temp.api_prior")
        insert, params = pipeline.api_insert(pipeline.API_TABLE, any(m.additive for m in cs.unified), [day])
        with conn.cursor() as cur, pipeline.merge_joins_off(cur):  # as build_api runs it
            plan(conn, "metrics_api: the insert of one customer_success date", insert, params)
        conn.rollback()

    target = RESULTS / f"explain-scale{meta['scale']:g}.txt"
    target.write_text("".join(out))
    print(f"written to {target}")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
