"""The benchmark of the whole daily job (issue #10): `make bench SCALE=s`.

Not a test: it measures, on a PostgreSQL of its own, and writes bench/results/latest.json (plus a
dated copy) with the machine, the data and the figures P1-P8, each beside its goal, and prints a
line per figure. Every ratio is two measurements of the same run on the same machine.

    P1  one whole daily run (4 domains, overview, unified, comparisons) / the same day computed
        the naive way (every rolling window from raw rows, every comparison date recomputed);
        also the daily run's seconds
    P2  daily run with DAYS (365) days of history / with SHORT_DAYS (90) days
    P3  a 90-day backfill through the range path / 90 single daily runs, outputs compared
    P4  parse time of each DAG file and of dags/, as `airflow dags report` gives it
    P5  validation of a domain-day (suite + anomaly checks) / that domain's refresh, per domain
    P6  p95 latency of the guide's four queries and two dashboard queries on metrics_api
    P7  synthetic data load rate (rows/s)
    P8  peak memory (RSS) of a process running a whole DAG run (`airflow dags test`: every task in
        that one process, so an upper bound of any single task process)

The daily run is the DAG's own sequence of steps (metrics_layer.runner) in this process; its
time is the warehouse work plus the layer's Python around it, without Airflow's scheduling.

    .local/venv/bin/python bench/bench.py --scale 1 [--days 365] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from metrics_layer import local  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BENCH_DIR = local.LOCAL_DIR / "bench"
# the benchmark's own server: a single-node warehouse on this 24 GB machine (no replica, so
# wal_level=minimal: a table loaded in the transaction that truncated it writes no WAL)
SETTINGS = {
    "shared_buffers": "4GB", "effective_cache_size": "16GB", "work_mem": "64MB",
    "maintenance_work_mem": "1GB", "max_wal_size": "4GB", "checkpoint_timeout": "30min",
    "random_page_cost": "1.1", "wal_level": "minimal", "max_wal_senders": "0",
}
GOALS = {"P1": 0.1, "P1_seconds": 15.0, "P2": 1.2, "P3": 0.2, "P4_file": 0.3, "P4_all": 1.5,
         "P5": 0.1, "P6_ms": 100.0, "P7": 300_000, "P8_mb": 300}
LAYER_SCHEMAS = ("entity", "metrics_staging", "metrics_state", "metrics_ops")


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


# ---------------------------------------------------------------------------- environment

def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def database(kind: str, scale: float) -> str:
    """The database of the long (365 days) or short (90 days) warehouse of a scale: each scale
    keeps its own, so a SCALE=1 run never reseeds the SCALE=10 data (hours to rebuild)."""
    return f"bench_{kind}_s{scale:g}".replace(".", "_")


class Warehouse:
    """The benchmark's server and one database on it; `use()` points the layer's connection
    (AIRFLOW_CONN_METRICS_WAREHOUSE) at it."""

    def __init__(self, server, name: str):
        self.server, self.name = server, name
        local.ensure_database(server, name)

    def use(self) -> None:
        os.environ[local.WAREHOUSE_ENV] = local.connection_json(self.server, self.name)

    def connect(self):
        import psycopg

        return psycopg.connect(host=local.socket_dir(self.server), user="postgres", dbname=self.name,
                               autocommit=True)

    def reset_layer(self) -> None:
        with self.connect() as conn:
            for schema in LAYER_SCHEMAS:
                conn.execute(f"drop schema if exists {schema} cascade")


def seeded_end(wh: Warehouse) -> date | None:
    """The end date of the data seeded in `wh` (None if never seeded)."""
    with wh.connect() as conn:
        if conn.execute("select to_regclass('public.bench_meta')").fetchone()[0] is None:
            return None
        found = conn.execute("select meta ->> 'end_date' from public.bench_meta where id = 1").fetchone()
        return date.fromisoformat(found[0]) if found else None


def seed(wh: Warehouse, scale: float, days: int, reuse: bool, end_date: date) -> dict:
    """Seed (timed) unless --reuse finds the same data; returns rows per table and seconds."""
    from metrics_layer import pipeline
    from metrics_layer import seed as seeder

    meta = {"scale": scale, "days": days, "seed": 42, "end_date": str(end_date)}
    with wh.connect() as conn:
        conn.execute("create table if not exists public.bench_meta (id int primary key, meta jsonb, "
                     "seconds float8, rows jsonb)")
        found = conn.execute("select meta, seconds, rows from public.bench_meta where id = 1").fetchone()
        if reuse and found and found[0] == meta:
            log(f"{wh.name}: reusing the seeded data ({meta})")
            return {"seconds": found[1], "rows": found[2], "reused": True}
        wh.reset_layer()
        t = time.perf_counter()
        seeder.seed(conn, scale=scale, days=days, seed=42, end_date=end_date, progress=sys.stdout.isatty())
        seconds = time.perf_counter() - t
        rows = {r[0]: r[1] for r in conn.execute(
            "select c.relname::text, 0 from pg_class as c where c.relnamespace = 'raw'::regnamespace "
            "and c.relkind = 'r' order by 1").fetchall()}
        for table in rows:  # exact counts, outside the timed load
            rows[table] = conn.execute(f"select count(*) from raw.{table}").fetchone()[0]  # noqa: S608
        conn.execute("insert into public.bench_meta values (1, %s, %s, %s) on conflict (id) do update "
                     "set meta = excluded.meta, seconds = excluded.seconds, rows = excluded.rows",
                     (json.dumps(meta), seconds, json.dumps(rows)))
    wh.use()
    with pipeline.connect() as conn:
        pipeline.ensure_schema(conn)
    total = sum(rows.values())
    log(f"{wh.name}: seeded {total:,} rows in {seconds:.1f}s ({total / seconds:,.0f} rows/s)")
    return {"seconds": seconds, "rows": rows, "reused": False}


# ---------------------------------------------------------------------------- runs

def daily_run(wh: Warehouse, day: date, run_id: str, timings: dict | None = None) -> float:
    """Every domain for `day`, then the fan-in, as the scheduled runs do; returns seconds."""
    from metrics_layer import runner
    from metrics_layer.registry import source_domains

    wh.use()
    started = time.perf_counter()
    fresh = datetime.now(UTC)  # the runs of one night are queued together
    for domain in source_domains():
        steps: dict = {}
        runner.run_domain(domain, [day], run_id, fresh, timings=steps)
        if timings is not None:
            timings[domain.name] = steps
    steps = {}
    runner.run_fan_in(run_id, timings=steps)
    if timings is not None:
        timings["fan_in"] = steps
    return time.perf_counter() - started


def backfill(wh: Warehouse, dates: list[date], per_date: bool) -> float:
    """A backfill of `dates`: one daily run per date (each followed by the fan-in, as the schedule
    does), or the range path (each domain's range in one run, then the fan-in once)."""
    from metrics_layer import runner
    from metrics_layer.registry import source_domains

    wh.use()
    fresh = datetime.now(UTC)
    started = time.perf_counter()
    if per_date:
        for i, d in enumerate(dates, 1):
            for domain in source_domains():
                runner.run_domain(domain, [d], f"backfill__{d}", fresh)
            runner.run_fan_in(f"fan_in__{d}")
            if i % 10 == 0:
                log(f"  {i}/{len(dates)} dates, {time.perf_counter() - started:.0f}s")
    else:
        for domain in source_domains():
            t = time.perf_counter()
            runner.run_domain(domain, dates, f"backfill__{dates[0]}_{dates[-1]}", fresh)
            log(f"  {domain.table}: {len(dates)} dates in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        runner.run_fan_in(f"fan_in__{dates[0]}_{dates[-1]}")
        log(f"  fan-in: {time.perf_counter() - t:.1f}s")
    return time.perf_counter() - started


def settle(wh: Warehouse) -> None:
    """VACUUM (ANALYZE) every table of the layer's entity and state schemas (the partitions, not
    their parents), untimed, before the timed daily runs: after P3's backfill or the history
    build, autovacuum works through millions of fresh rows for minutes, and a daily run measured
    meanwhile shares the two cores with it (at SCALE=10 the 90-day runs took 13.5 s instead of
    9.9 s while the new partitions were being vacuumed). A scheduled daily run meets a warehouse
    autovacuum has long caught up with, and whose pages are on disk: a CHECKPOINT after the
    VACUUM writes the pages it dirtied (with data checksums, PostgreSQL 18's default, setting
    hint and visibility bits logs whole pages: after the 364-day history build its VACUUM wrote
    ~2 GB of WAL every 10 s, and the checkpoint it started was still writing through the timed
    runs of run N, whose 365-day runs took 10.1 s against 8.7 s minutes later)."""
    started = time.perf_counter()
    with wh.connect() as conn:
        tables = [r[0] for r in conn.execute(
            "select c.oid::regclass::text from pg_class as c join pg_namespace as n on n.oid = c.relnamespace "
            "where n.nspname in ('entity', 'metrics_state') and c.relkind = 'r' order by 1").fetchall()]
        for table in tables:
            conn.execute(f"vacuum (analyze) {table}")
        conn.execute("checkpoint")
    log(f"{wh.name}: vacuumed and analyzed {len(tables)} tables in {time.perf_counter() - started:.0f}s (untimed)")


def checksums(wh: Warehouse) -> dict:
    """Row count and a hash of every row of every table readers see (schema entity)."""
    with wh.connect() as conn:
        tables = [r[0] for r in conn.execute("select format('%I.%I', schemaname, tablename) from pg_tables "
                                             "where schemaname = 'entity' order by 1").fetchall()]
        # Order-independent: the sum of each row's 64-bit md5 prefix (a string_agg of every row would pass
        # PostgreSQL's 1 GB value limit at SCALE=10).
        row_hash = "('x' || left(md5(x::text), 16))::bit(64)::bigint::numeric"
        return {t: [int(v) for v in conn.execute(
            f"select count(*), coalesce(sum({row_hash}), 0) from {t} as x").fetchone()]  # noqa: S608
            for t in tables}


# ---------------------------------------------------------------------------- figures

def p1_naive(wh: Warehouse, day: date) -> dict:
    import naive

    wh.use()
    return naive.run(wh, day)


def _airflow_home(env: dict) -> None:
    """The benchmark's own Airflow metadata DB (SQLite), migrated once."""
    marker = Path(env["AIRFLOW_HOME"]) / ".migrated"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        marker.write_text("ok")


def p4_parse() -> dict:
    env = _airflow_env()
    _airflow_home(env)
    out = subprocess.run([sys.executable, "-m", "airflow", "dags", "report", "-o", "json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(next(line for line in out.splitlines() if line.startswith("[{")))

    def seconds(s: str) -> float:
        h, m, sec = s.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)

    files = {r["file"]: seconds(r["duration"]) for r in report}
    return {"files": files, "all": sum(files.values())}


def clock_for(day: date, now: datetime | None = None) -> str | None:
    """The session TimeZone under which CURRENT_DATE is `day` right now, so that the guide's
    queries run as written on the day measured: None when `day` is today in UTC; otherwise an
    `Etc/GMT` zone (whole hours, UTC-12 to UTC+14) whose local date is `day`, the one whose
    local time is nearest noon (a measurement never straddles its midnight); "" when no zone
    is (a run reusing a seed more than about a day old)."""
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    if now.date() == day:
        return None
    noon = datetime.combine(day, datetime.min.time()) + timedelta(hours=12)
    offsets = [h for h in range(-12, 15) if (now + timedelta(hours=h)).date() == day]
    if not offsets:
        return ""
    h = min(offsets, key=lambda h: abs(now + timedelta(hours=h) - noon))
    return f"Etc/GMT{-h:+d}"  # POSIX signs: Etc/GMT+10 is UTC-10


def as_of(sql: str, day: date, clock: str) -> str:
    """`sql` as run on `day` under `clock` (what `use_clock` did on the connection): as written
    (CURRENT_DATE) unless the clock is "literal", then with the day's literal. The planner prunes
    a literal's partitions at plan time and CURRENT_DATE's at run time, and the plans differ
    (guide query 2 on today's partition: an index-ordered aggregate against an append, then a
    sort), so the literal is the last resort, and the result says which was used."""
    if clock != "literal":
        return sql
    return re.sub(r"\bcurrent_date\b", f"date '{day}'", sql, flags=re.IGNORECASE)


def use_clock(conn, day: date) -> str:
    """Set the session time zone of `conn` for `day` (see clock_for); returns how CURRENT_DATE
    was made `day`: "today", "time zone <zone>" or "literal"."""
    zone = clock_for(day)
    if zone:
        conn.execute(f"set time zone '{zone}'")
        if conn.execute("select current_date").fetchone()[0] != day:  # midnight passed meanwhile
            raise RuntimeError(f"CURRENT_DATE is not {day} under {zone}")
    return "today" if zone is None else f"time zone {zone}" if zone else "literal"


def p6_latency(wh: Warehouse, repeat: int, today: date) -> tuple[dict, str]:
    """p95 and median of each query, and how CURRENT_DATE was made `today` (`use_clock`)."""
    queries = {p.stem: p.read_text().split("\n", 1)[1] for p in sorted((ROOT / "docs" / "guide_queries").glob("*.sql"))}
    # a customer's page: one entity's tier-1 metrics over 90 days with their comparisons
    queries["dashboard_one_customer_90d"] = (
        "select metric_date, metric_name, metric_value, value_7d_ago, pct_change_7d, value_1y_ago, "
        "pct_change_1y from entity.metrics_api where domain = 'customer_success' and entity_id = "
        "(select min(entity_id) from entity.metrics_api where domain = 'customer_success' "
        "and metric_date = current_date) and importance_tier = 'tier_1' "
        "and metric_date >= current_date - 90 order by metric_name, metric_date")
    # the at-risk list: today's biggest health drops week over week
    queries["dashboard_top_movers_today"] = (
        "select entity_name, metric_value, value_7d_ago, pct_change_7d from entity.metrics_api "
        "where domain = 'customer_success' and metric_name = 'customer_health_score' "
        "and metric_date = current_date and pct_change_7d is not null "
        "order by pct_change_7d asc limit 20")
    out = {}
    with wh.connect() as conn:
        clock = use_clock(conn, today)
        for name, sql in queries.items():
            sql = as_of(sql, today, clock)
            runs = []
            for i in range(repeat + 3):
                t = time.perf_counter()
                rows = conn.execute(sql).fetchall()
                if i >= 3:  # three warm-up runs (a dashboard's cache is warm too)
                    runs.append((time.perf_counter() - t) * 1000)
            runs.sort()
            out[name] = {"p95_ms": round(runs[max(0, int(len(runs) * 0.95) - 1)], 2),
                         "median_ms": round(statistics.median(runs), 2), "rows": len(rows)}
    return out, clock


def _airflow_env(warehouse: Warehouse | None = None) -> dict:
    home = BENCH_DIR / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
               AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}")
    if warehouse is not None:
        env[local.WAREHOUSE_ENV] = local.connection_json(warehouse.server, warehouse.name)
    return env


def p8_memory(wh: Warehouse, day: date) -> dict:
    env = _airflow_env(wh)
    _airflow_home(env)
    from metrics_layer.registry import source_domains

    out = {}
    for dag_id in [d.table for d in source_domains()] + ["metrics_unified"]:
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "dags", "test", dag_id, day.isoformat()],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out[dag_id] = {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "exit": proc.returncode}
    return out


def _figure(value, goal, ok, unit, text, **details) -> dict:
    return {"figure": text, "value": value, "goal": goal, "ok": bool(ok), "unit": unit, **details}


# ---------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--days", type=int, default=365, help="history of the long warehouse (P1, P2, P6)")
    ap.add_argument("--short-days", type=int, default=90, help="history of the short warehouse (P2, P3)")
    ap.add_argument("--backfill-days", type=int, default=90, help="dates of the P3 backfill")
    ap.add_argument("--repeat", type=int, default=3, help="daily runs measured (median)")
    ap.add_argument("--queries", type=int, default=30, help="timed executions of each P6 query")
    ap.add_argument("--reuse", action="store_true", help="keep seeded data that matches")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"))
    ap.add_argument("--resume", action="store_true",
                    help="with --reuse: keep P3 from an interrupted run's --out (same scale) and finish the "
                         "long warehouse's history where it stopped")
    args = ap.parse_args()

    local.apply_airflow_env()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from metrics_layer.dates import utc_today

    started = time.perf_counter()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    server = local.embedded_server(pgdata=BENCH_DIR / "pgdata", settings=SETTINGS)
    long_wh, short_wh = (Warehouse(server, database(kind, args.scale)) for kind in ("long", "short"))
    # "today" is the last day of the data: with --reuse, the day the warehouses were seeded up to
    # (a run reusing yesterday's seed measures yesterday's daily run, not a day without data; a
    # warehouse dropped meanwhile is seeded up to the other's day, not the 365-day one again)
    ends = {e for e in (seeded_end(long_wh), seeded_end(short_wh)) if e is not None}
    today = ends.pop() if args.reuse and len(ends) == 1 else utc_today()
    with long_wh.connect() as conn:
        pg = conn.execute("show server_version").fetchone()[0]
    result = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "postgres": {"version": pg, "settings": SETTINGS}, "scale": args.scale,
              "days": args.days, "short_days": args.short_days, "figures": {}, "timings": {}}
    fig = result["figures"]
    RESULTS.mkdir(parents=True, exist_ok=True)

    def save(final: bool = False) -> None:
        """Write what is measured so far (a crash late in a long run keeps the early figures)."""
        result["complete"] = final
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")

    log(f"SCALE={args.scale}: seeding {args.days} days (long) and {args.short_days} days (short)")
    seeded = seed(long_wh, args.scale, args.days, args.reuse, today)
    seed(short_wh, args.scale, args.short_days, args.reuse, today)
    result["data"] = {"long": seeded["rows"]}
    # with --reuse, the seed measured when the data was loaded (bench_meta keeps it)
    rate = sum(seeded["rows"].values()) / seeded["seconds"]
    fig["P7"] = _figure(round(rate), f">= {GOALS['P7']:,}", rate >= GOALS["P7"], "rows/s",
                        "synthetic data load rate", rows=sum(seeded["rows"].values()),
                        seconds=round(seeded["seconds"], 1), measured_in_this_run=not seeded["reused"])

    # P3: 90 single daily runs against one range run, from an empty layer each, same output
    # through today: the first date's window then holds one day of raw data (a window with none
    # fails the product suite, rightly: no active user at all is not a valid day)
    dates = [today - timedelta(days=i) for i in range(args.backfill_days - 1, -1, -1)]
    earlier = json.loads(Path(args.out).read_text()) if args.resume and Path(args.out).exists() else {}
    if earlier.get("scale") == args.scale and "P3" in earlier.get("figures", {}):
        fig["P3"] = dict(earlier["figures"]["P3"], measured_at=earlier["generated_at"])
        log(f"P3 kept from the interrupted run of {earlier['generated_at']}")
    else:
        measure_p3(args, short_wh, dates, fig, save)
    run_the_rest(args, result, long_wh, short_wh, today, started, save)


def write_floor(wh: Warehouse, dates: list[date]) -> dict:
    """The physical floor of a backfill's output: the seconds to write the rows the range put in
    the long table (pipeline.PARTITIONED_TABLES: metrics_api; until 0.2 also the unified table),
    already computed, the cheapest way PostgreSQL can: each into a new
    unindexed table in one transaction (WAL-skipped under wal_level=minimal, as the range path's
    new partitions are), its indexes (the parent's definitions) built after, then committed.
    No query and no comparison is computed: any backfill writing these rows costs at least this."""
    from metrics_layer.pipeline import PARTITIONED_TABLES

    out = {}
    with wh.connect() as conn:
        conn.execute("drop schema if exists bench_floor cascade")
        conn.execute("create schema bench_floor")
        for qualified in PARTITIONED_TABLES:
            schema, table = qualified.split(".")
            defs = [r[0] for r in conn.execute(
                "select indexdef from pg_indexes where schemaname = %s and tablename = %s order by 1",
                (schema, table)).fetchall()]
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(f"create table bench_floor.{table} (like {qualified} including defaults)")
                rows = conn.execute(f"insert into bench_floor.{table} select * from {qualified} "  # noqa: S608
                                    "where metric_date between %s and %s", (dates[0], dates[-1])).rowcount
                for d in defs:
                    conn.execute(re.sub(rf"^CREATE (UNIQUE )?INDEX \S+ ON ONLY {schema}\.(\w+) ",
                                        r"CREATE \1INDEX ON bench_floor.\2 ", d))
            out[table] = {"rows": rows, "seconds": round(time.perf_counter() - started, 1), "indexes": len(defs)}
        conn.execute("drop schema bench_floor cascade")
    return out


def measure_p3(args, short_wh: Warehouse, dates: list[date], fig: dict, save) -> None:
    log(f"P3: {len(dates)} single daily runs on the short warehouse")
    short_wh.reset_layer()
    t_single = backfill(short_wh, dates, per_date=True)
    single_sums = checksums(short_wh)
    log(f"P3: the same {len(dates)} dates through the range path")
    short_wh.reset_layer()
    t_range = backfill(short_wh, dates, per_date=False)
    identical = checksums(short_wh) == single_sums
    log("P3: the floor, writing the range's rows of the long table in bulk")
    floor = write_floor(short_wh, dates)
    floor_s = sum(v["seconds"] for v in floor.values())
    fig["P3"] = _figure(round(t_range / t_single, 3), f"<= {GOALS['P3']}", t_range / t_single <= GOALS["P3"],
                        "ratio", f"{len(dates)}-day backfill: range path / single daily runs",
                        range_seconds=round(t_range, 1), single_seconds=round(t_single, 1),
                        identical_output=identical,
                        rows_compared={t: v[0] for t, v in single_sums.items()},
                        write_floor_seconds=round(floor_s, 1), write_floor_ratio=round(floor_s / t_single, 3),
                        write_floor=floor)
    log(f"P3 = {t_range:.1f}s / {t_single:.1f}s = {t_range / t_single:.3f}; identical output: {identical}; "
        f"the long table's rows alone, written in bulk: {floor_s:.1f}s = {floor_s / t_single:.3f} of the single runs")
    save()


def run_the_rest(args, result: dict, long_wh: Warehouse, short_wh: Warehouse, today: date, started: float,
                 save) -> None:
    from metrics_layer import runner

    fig, tim = result["figures"], result["timings"]

    # daily runs on 90 days of history (short) and DAYS of history (long)
    daily_run(short_wh, today, f"scheduled__{today}_warm")  # untimed: caches, a pending migration
    settle(short_wh)
    runs_short = [daily_run(short_wh, today, f"scheduled__{today}_{i}") for i in range(args.repeat)]
    log(f"daily run, {args.short_days} days of history: {statistics.median(runs_short):.2f}s")
    log(f"history: {args.days - 1} dates through the range path on the long warehouse")
    long_dates = [today - timedelta(days=i) for i in range(args.days - 1, 0, -1)]
    if args.resume and _has_history(long_wh, long_dates, "metrics_customer_success"):
        # an interrupted history build: the domains are published, the fan-in rebuilds what is stale
        log("  finishing the fan-in of the interrupted history build")
        long_wh.use()
        t = time.perf_counter()
        runner.run_fan_in(f"fan_in__{long_dates[0]}_{long_dates[-1]}")
        log(f"  fan-in: {time.perf_counter() - t:.1f}s")
    elif not (args.reuse and _has_history(long_wh, long_dates)):
        long_wh.reset_layer()
        tim["history_build_seconds"] = round(backfill(long_wh, long_dates, per_date=False), 1)
    daily_run(long_wh, today, f"scheduled__{today}_warm")  # untimed, as on the short warehouse
    settle(long_wh)
    runs_long, steps = [], []
    for i in range(args.repeat):
        t: dict = {}
        runs_long.append(daily_run(long_wh, today, f"scheduled__{today}_{i}", t))
        steps.append(t)
    daily = statistics.median(runs_long)
    step = steps[runs_long.index(daily)]
    tim["daily_run_long"] = step
    log(f"daily run, {args.days} days of history: {daily:.2f}s")
    fig["P2"] = _figure(round(daily / statistics.median(runs_short), 3), f"<= {GOALS['P2']}",
                        daily / statistics.median(runs_short) <= GOALS["P2"], "ratio",
                        f"daily run with {args.days} days of history / with {args.short_days}",
                        long_seconds=[round(x, 2) for x in runs_long],
                        short_seconds=[round(x, 2) for x in runs_short])

    log("P1: the same day the naive way")
    naive = p1_naive(long_wh, today)
    ratio = daily / naive["seconds"]
    fig["P1"] = _figure(round(ratio, 3), f"<= {GOALS['P1']} and <= {GOALS['P1_seconds']:g} s",
                        ratio <= GOALS["P1"] and daily <= GOALS["P1_seconds"], "ratio",
                        "daily run / the same day computed naively", daily_seconds=round(daily, 2),
                        naive_seconds=round(naive["seconds"], 1), naive=naive["parts"])
    log(f"P1 = {daily:.2f}s / {naive['seconds']:.1f}s = {ratio:.3f}")
    save()

    p5 = {}
    for name, s in step.items():
        if name == "fan_in":
            continue
        refresh = s["check_sources"] + s["refresh_state"] + s["build"] + s["publish"]
        p5[name] = {"validate_s": round(s["validate"], 4), "refresh_s": round(refresh, 4),
                    "ratio": round(s["validate"] / refresh, 3)}
    worst = max(v["ratio"] for v in p5.values())
    fig["P5"] = _figure(worst, f"<= {GOALS['P5']}", worst <= GOALS["P5"], "ratio",
                        "validation of a domain-day / that domain's refresh (worst domain)", domains=p5)

    log("P6: query latency")
    p6, clock = p6_latency(long_wh, args.queries, today)
    worst = max(v["p95_ms"] for v in p6.values())
    fig["P6"] = _figure(worst, f"<= {GOALS['P6_ms']:g} ms", worst <= GOALS["P6_ms"], "ms",
                        f"p95 latency, {args.days} days of history (worst query)", queries=p6,
                        current_date=clock)

    log("P4: DAG parse time")
    p4 = p4_parse()
    fig["P4"] = _figure(round(max(p4["files"].values()), 3),
                        f"< {GOALS['P4_file']} s each, < {GOALS['P4_all']} s all",
                        max(p4["files"].values()) < GOALS["P4_file"] and p4["all"] < GOALS["P4_all"], "s",
                        "parse time of the slowest DAG file (airflow dags report)",
                        all_seconds=round(p4["all"], 3), files=p4["files"])

    log("P8: peak memory of a DAG run's process")
    p8 = p8_memory(long_wh, today)
    worst = max(v["peak_rss_mb"] for v in p8.values())
    fig["P8"] = _figure(worst, f"<= {GOALS['P8_mb']} MB", worst <= GOALS["P8_mb"], "MB",
                        "peak RSS of an `airflow dags test` process (all tasks of a run)", dags=p8)

    result["total_seconds"] = round(time.perf_counter() - started, 1)
    result["self_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    with long_wh.connect() as conn:
        result["data"]["database_size_gb"] = {
            wh.name: round(conn.execute("select pg_database_size(%s)", (wh.name,)).fetchone()[0] / 2**30, 2)
            for wh in (long_wh, short_wh)}
    save(final=True)
    # named by when the run started (the day measured can be an earlier seed's: a run reusing
    # yesterday's seed overwrote yesterday's copy)
    stamp = datetime.fromisoformat(result["generated_at"]).strftime("%Y-%m-%d-%H%M")
    (RESULTS / f"{stamp}-scale{args.scale:g}.json").write_text(Path(args.out).read_text())
    print()
    for key in sorted(fig):
        f = fig[key]
        print(f"{key}  {'ok  ' if f['ok'] else 'MISS'}  {f['value']} {f['unit']:<7} goal {f['goal']:<28} {f['figure']}")
    print(f"\nwritten to {args.out} ({result['total_seconds']:.0f}s)")


def _has_history(wh: Warehouse, dates: list[date], target: str = "metrics_unified_domains") -> bool:
    with wh.connect() as conn:
        if conn.execute("select to_regclass('metrics_ops.publish_log')").fetchone()[0] is None:
            return False
        n = conn.execute("select count(distinct metric_date) from metrics_ops.publish_log "
                         "where target = %s and metric_date = any(%s)",
                         (target, dates)).fetchone()[0]
        return n == len(dates)


if __name__ == "__main__":
    main()
