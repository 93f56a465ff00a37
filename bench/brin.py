"""BRIN or btree on append-only event time, measured (issue #10): `make bench-indexes`.

Run after `make bench` on its long warehouse. A copy of raw.product_events in occurred_at order
(how an append-only event table lies on disk once loaded by time) gets a btree on occurred_at,
then a BRIN instead; for each: build time, size, and the time of what the daily run asks of it
(the events of one day, aggregated per user as the state build does; median of 5, warm cache).
The seeded table itself is not in time order (the generator writes user by user): its
correlation is reported too. Results go to bench/results/indexes-scale<s>.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench import BENCH_DIR, RESULTS, SETTINGS, Warehouse, machine  # noqa: E402

from metrics_layer import local  # noqa: E402

DAY_QUERY = """
select user_id, count(*), bit_or(1::bigint << feature_id) filter (where feature_id between 0 and 63)
from public.events_by_time
where occurred_at >= %(d)s::date and occurred_at < %(d)s::date + 1
group by user_id
"""


def timed(conn, sql: str, params: dict | None = None) -> float:
    t = time.perf_counter()
    conn.execute(sql, params)
    return time.perf_counter() - t


def main() -> None:
    server = local.embedded_server(pgdata=BENCH_DIR / "pgdata", settings=SETTINGS)
    wh = Warehouse(server, "bench_long")
    from metrics_layer.dates import utc_today

    day = utc_today() - timedelta(days=1)
    with wh.connect() as conn:
        meta = conn.execute("select meta from public.bench_meta where id = 1").fetchone()[0]
        conn.execute("analyze raw.product_events")
        seeded_corr = conn.execute("select correlation from pg_stats where schemaname = 'raw' and "
                                   "tablename = 'product_events' and attname = 'occurred_at'").fetchone()[0]
        conn.execute("drop table if exists public.events_by_time")
        copy_s = timed(conn, "create table public.events_by_time as "
                             "select * from raw.product_events order by occurred_at")
        conn.execute("vacuum analyze public.events_by_time")
        rows = conn.execute("select count(*) from public.events_by_time").fetchone()[0]
        out = {"machine": machine(), "scale": meta["scale"], "days": meta["days"], "rows": rows,
               "day": str(day), "seeded_table_correlation": round(seeded_corr, 4),
               "copy_seconds": round(copy_s, 1), "indexes": {}}
        for kind, ddl in (("btree", "create index events_by_time_idx on public.events_by_time (occurred_at)"),
                          ("brin", "create index events_by_time_idx on public.events_by_time "
                                   "using brin (occurred_at) with (pages_per_range = 32)")):
            conn.execute("drop index if exists public.events_by_time_idx")
            build = timed(conn, ddl)
            conn.execute("analyze public.events_by_time")
            size = conn.execute("select pg_relation_size('public.events_by_time_idx')").fetchone()[0]
            runs = [timed(conn, DAY_QUERY, {"d": day}) for _ in range(6)][1:]
            plan = "\n".join(r[0] for r in conn.execute("explain (analyze, buffers, costs off) " + DAY_QUERY,
                                                         {"d": day}).fetchall())
            out["indexes"][kind] = {"build_seconds": round(build, 2), "size_mb": round(size / 2**20, 2),
                                    "one_day_median_seconds": round(statistics.median(runs), 3),
                                    "plan": plan}
            print(kind, out["indexes"][kind]["build_seconds"], out["indexes"][kind]["size_mb"],
                  out["indexes"][kind]["one_day_median_seconds"])
        out["table_mb"] = round(conn.execute("select pg_relation_size('public.events_by_time')").fetchone()[0]
                                / 2**20, 1)
        conn.execute("drop table public.events_by_time")
    target = RESULTS / f"indexes-scale{meta['scale']:g}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {target}")


if __name__ == "__main__":
    main()
