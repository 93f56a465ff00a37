"""Benchmark the daily run on generated data (not a test: numbers go to bench/RESULTS.md).

    .local/venv/bin/python bench/bench_daily.py --scale 1 --days 60

Measures, on the embedded PostgreSQL (database metrics_bench): the seed; the first run of a
date (30 days of compact state built cold); a steady-state daily run (state for one new day,
build into staging, publish); the build query alone; and, as the baseline, the same activity
windows recomputed from raw events for one date.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date, timedelta
from pathlib import Path

from metrics_layer import local, pipeline, seed
from metrics_layer.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]

DB = "metrics_bench"


def timed(fn, *args, repeat: int = 1) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) // 1024 // 1024
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, {platform.system()} {platform.release()}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import psycopg

    server = local.embedded_server()
    local.ensure_database(server, DB, recreate=True)
    conn = psycopg.connect(host=local.socket_dir(server), user="postgres", dbname=DB, autocommit=True)
    pg = conn.execute("show server_version").fetchone()[0]

    t = time.perf_counter()
    counts = seed.seed(conn, scale=args.scale, days=args.days)
    t_seed = time.perf_counter() - t
    pipeline.ensure_schema(conn)
    cs = load_registry()["customer_success"]
    today = date.today()
    first = today - timedelta(days=3)

    def state(d):
        pipeline.refresh_state(conn, "user_activity_daily", d, 1, cs.state_window_days)

    t_cold = timed(state, first)  # 30 days of state from nothing

    def daily(d):
        state(d)
        pipeline.build_staging(conn, cs, d)
        pipeline.publish(conn, cs, d)

    t_daily = statistics.median([timed(daily, first + timedelta(days=i)) for i in range(1, 4)])

    def build_only():
        pipeline.build_staging(conn, cs, today)

    t_build = timed(build_only, repeat=args.repeat)
    naive = (ROOT / "bench" / "naive_windows.sql").read_text()

    def naive_windows():
        conn.execute(naive, {"metric_date": today}).fetchall()

    def state_windows():
        conn.execute(
            "select customer_id, count(distinct user_id), count(*), "
            "count(distinct f) from metrics_state.user_activity_daily "
            "left join lateral unnest(feature_ids) as f on true "
            "where activity_date >= %(d)s::date - 30 and activity_date < %(d)s and customer_id is not null "
            "group by customer_id", {"d": today}).fetchall()

    t_naive = timed(naive_windows, repeat=args.repeat)
    t_state = timed(state_windows, repeat=args.repeat)
    rows = [
        ("seed (all sources)", t_seed),
        ("first run of a date: 30 days of state, cold", t_cold),
        ("daily run: 1 day of state + build + publish", t_daily),
        ("build query alone (staging insert)", t_build),
        ("activity windows from raw events (baseline)", t_naive),
        ("activity windows from compact state", t_state),
    ]
    out = [f"### {today} SCALE={args.scale} DAYS={args.days}", "",
           f"Machine: {machine()}; PostgreSQL {pg} (embedded). Events: {counts.get('product_events', 0):,}; "
           f"customers: {counts.get('customers', 0):,}; users: {counts.get('users', 0):,}.", "",
           "| step | seconds |", "|---|---|"]
    out += [f"| {name} | {secs:.2f} |" for name, secs in rows]
    out += ["", f"Windows from state vs from raw: {t_naive / t_state:.1f}x faster.", ""]
    text = "\n".join(out)
    print(text)
    with (ROOT / "bench" / "RESULTS.md").open("a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
