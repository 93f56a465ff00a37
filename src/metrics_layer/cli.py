"""Command line behind the Makefile (also installed as `metrics-layer`):
`python -m metrics_layer.cli {warehouse,seed,migrate,dag,run,demo,catalog}`.

DAGs run in this process with `dag.test()` and Airflow's task retries turned off, so a command
never sits silent waiting for a retry: transient errors are retried inside the task (tenacity,
logged), permanent ones fail at once. Airflow is imported only after the local environment is
set, so Airflow picks up .local/.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta

from metrics_layer import local
from metrics_layer.dates import utc_today
from metrics_layer.paths import DOCS_DIR

GUIDE_QUERIES = DOCS_DIR / "guide_queries"


def _connect():
    from metrics_layer import pipeline

    return pipeline.connect()


def cmd_warehouse(_args) -> None:
    print(local.ensure_warehouse())
    if local.EMBEDDED:
        print(f"connect with: {local.psql_command()}")


def cmd_seed(args) -> None:
    from metrics_layer import seed

    print(local.ensure_warehouse())
    started = time.monotonic()
    counts = seed.seed(_connect(), scale=args.scale, days=args.days, seed=args.seed, progress=True)
    total = sum(counts.values())
    print(f"seeded SCALE={args.scale} DAYS={args.days} SEED={args.seed} through "
          f"{utc_today() - timedelta(days=1)} in {time.monotonic() - started:.1f}s ({total:,} rows, "
          f"{total / (time.monotonic() - started):,.0f} rows/s)")
    for table, n in counts.items():
        print(f"  raw.{table:<18} {n:>10,}")


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if dagbag.import_errors:
        raise SystemExit(f"DAG import errors: {dagbag.import_errors}")
    return dagbag


def _run_dag(dagbag, dag_id: str, day: date | None = None, conf: dict | None = None) -> str:
    """dag.test() of one DAG with Airflow's retries off (see the module docstring)."""
    import pendulum

    dag = dagbag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(f"DAG {dag_id!r} not found; DAGs: {', '.join(sorted(dagbag.dag_ids))}")
    for t in dag.tasks:
        t.retries = 0
    kwargs: dict = {"run_conf": conf} if conf else {}
    if day is not None:
        kwargs["logical_date"] = pendulum.datetime(day.year, day.month, day.day, tz="UTC")
    return dag.test(**kwargs).state


def cmd_dag(args) -> None:
    """One DAG for one logical date against the same warehouse as the demo, task logs on the
    terminal; exit status 1 when the run failed."""
    print(local.ensure_warehouse())
    local.ensure_airflow_db()
    print(f"running {args.dag_id} for {args.date} with Airflow retries off: transient errors are "
          "retried inside the task with backoff (each retry logged), permanent ones fail at once")
    state = _run_dag(_dagbag(), args.dag_id, date.fromisoformat(args.date))
    print(f"{args.dag_id} {args.date}: {state}")
    sys.exit(0 if state == "success" else 1)


def run_dates(domains, dates: list[date], log_path, per_date: bool = False) -> list[str]:
    """Every domain DAG for a range of consecutive dates, then the fan-in once; a progress line
    per run, task logs to `log_path`. By default each domain builds the whole range in one run
    (the DAG's `end_date` param: state once, one validation, one publication; ranges longer
    than runctx.MAX_RANGE_DAYS go in consecutive runs); `per_date` runs one DAG run per date,
    as Airflow's own backfill does. A failing domain does not stop the others (the fan-in
    publishes what did succeed). Returns the failures."""
    from metrics_layer.runctx import MAX_RANGE_DAYS

    with _output_to(log_path):
        dagbag = _dagbag()
    # historical dates rebuild the state days built before this command started, each once
    fresh = {"state_fresh_after": datetime.now(UTC).isoformat()}
    if per_date:
        runs = [(d, d) for d in dates]
    else:
        runs = [(chunk[0], chunk[-1]) for chunk in
                (dates[i:i + MAX_RANGE_DAYS] for i in range(0, len(dates), MAX_RANGE_DAYS))]
    failures = []
    total = len(domains) * len(runs)
    n = 0
    for domain in domains:
        t0 = time.monotonic()
        for first, last in runs:
            n += 1
            t = time.monotonic()
            # every param named: dag.test() keeps a run's conf in the DAG object for the next run
            conf = dict(fresh, **({"metric_date": first.isoformat(), "end_date": last.isoformat()}
                                  if last != first else {"metric_date": None, "end_date": None}))
            with _output_to(log_path):
                state = _run_dag(dagbag, domain.table, last, conf)
            label = f"{first}" if first == last else f"{first}..{last}"
            print(f"      [{n}/{total}] {domain.table} {label}: {state} ({time.monotonic() - t:.1f}s)",
                  flush=True)
            if state != "success":
                failures.append(f"{domain.table} {label}")
        print(f"      {domain.table}: {len(dates)} date(s) in {len(runs)} run(s), "
              f"{time.monotonic() - t0:.1f}s", flush=True)
    t = time.monotonic()
    with _output_to(log_path):
        state = _run_dag(dagbag, "metrics_unified")
    print(f"      metrics_unified (fan-in): {state} ({time.monotonic() - t:.1f}s)", flush=True)
    if state != "success":
        failures.append("metrics_unified")
    return failures


def cmd_run(args) -> None:
    """A date or a range through every domain DAG and the fan-in, with progress."""
    from metrics_layer.registry import source_domains

    first = date.fromisoformat(args.date)
    last = date.fromisoformat(args.end) if args.end else first
    if last < first:
        raise SystemExit(f"END {last} is before DATE {first}")
    dates = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    print(local.ensure_warehouse())
    local.ensure_airflow_db()
    domains = [d for d in source_domains() if not args.domain or d.name in args.domain
               or d.table in args.domain]
    log_path = local.LOCAL_DIR / "run.log"
    how = "one run per date" if args.per_date else "each domain's range in one run"
    print(f"running {len(domains)} domain(s) for {first}..{last} ({how}), then the fan-in "
          f"(task logs: {log_path})")
    failures = run_dates(domains, dates, log_path, per_date=args.per_date)
    if failures:
        print(f"failed: {', '.join(failures)}; see {log_path}")
        sys.exit(1)
    print("all runs succeeded")


def cmd_migrate(_args) -> None:
    """Apply the layer's DDL now (the daily path only checks the schema hash)."""
    from metrics_layer import pipeline

    print(local.ensure_warehouse())
    with pipeline.connect() as conn:
        before = pipeline.applied_schema_hash(conn)
        after = pipeline.migrate(conn)
    print(f"schema {before or 'none'} -> {after}" if before != after else f"schema {after}: up to date")


def print_query(conn, sql: str) -> None:
    from rich.console import Console
    from rich.table import Table

    with conn.cursor() as cur:
        cur.execute(sql)
        table = Table(*[c.name for c in cur.description])
        for row in cur.fetchall():
            table.add_row(*["" if v is None else str(v) for v in row])
    Console(width=120).print(table)


@contextlib.contextmanager
def _output_to(path):
    """Send this process's stdout/stderr (file descriptors, so Airflow's task logs too) to
    `path` for the duration; the demo prints a summary and points at the full log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def headline(conn, domain, day: date) -> str:
    """One line of headline numbers for a domain's day (the registry's `headline` aggregates)."""
    exprs = domain.headline or {"rows": "count(*)"}
    select = ", ".join(f"{expr} as {name}" for name, expr in exprs.items())
    row = conn.execute(f"select {select} from entity.{domain.table} where metric_date = %s",  # noqa: S608
                       (day,)).fetchone()
    return ", ".join(f"{name} {value if value is not None else 'n/a'}" for name, value in zip(exprs, row, strict=True))


def cmd_demo(args) -> None:
    from metrics_layer import seed
    from metrics_layer.registry import load_registry, source_domains

    started = time.monotonic()
    log_path = local.LOCAL_DIR / "demo.log"
    log_path.unlink(missing_ok=True)
    print(f"[1/5] warehouse: {local.ensure_warehouse()}")
    local.ensure_airflow_db()
    print(f"[2/5] seeding SCALE={args.scale} DAYS={args.days} SEED={args.seed} (history through yesterday)")
    counts = seed.seed(_connect(), scale=args.scale, days=args.days, seed=args.seed)
    print("      " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))

    domains = source_domains()
    today = utc_today()  # metric dates are UTC days, whatever this machine's time zone
    dates = [today - timedelta(days=i) for i in range(args.runs - 1, -1, -1)]
    print(f"[3/5] running {len(domains)} domain DAGs for {dates[0]}..{dates[-1]}, then the fan-in "
          f"(task logs: {log_path})")
    failures = run_dates(domains, dates, log_path)
    if failures:
        raise SystemExit(f"failed: {', '.join(failures)}; see {log_path}")
    conn = _connect()
    print(f"[4/5] today ({today}), per domain:")
    for domain in load_registry().values():  # the company overview (built by the fan-in) too
        print(f"  {domain.name:<17} {headline(conn, domain, today)}")
    n_unified = conn.execute("select count(*) from entity.metrics_unified_domains where metric_date = %s",
                             (today,)).fetchone()[0]
    print(f"  {'unified':<17} {n_unified:,} metric values in metrics_unified_domains")
    print(f"\n[5/5] the guide's four example queries, verbatim ({time.monotonic() - started:.0f}s so far):")
    for path in sorted(GUIDE_QUERIES.glob("*.sql")):
        query = path.read_text().split("\n", 1)[1]  # drop the provenance comment
        print(f"\n{path.stem}:\n{query}")
        print_query(conn, query)
    if local.EMBEDDED:
        print("\nConnect with psql (search_path includes entity, days are UTC):")
        print(f"  {local.psql_command()}")
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s")


def cmd_catalog(_args) -> None:
    from metrics_layer import catalog

    catalog.write_markdown()
    print(f"wrote {catalog.CATALOG_MD}")


def cmd_docs(args) -> None:
    from pathlib import Path

    from metrics_layer import datadocs

    print(local.ensure_warehouse())
    index = datadocs.build(Path(args.out), days=args.days)
    print(f"Data Docs: {index}")


def cmd_superset_bundle(args) -> None:
    """Write the Superset bundle (datasets, charts, dashboards) for the BI role's URI."""
    from pathlib import Path

    from metrics_layer import superset_bundle, superset_local

    uri = args.uri or superset_local.warehouse_uri()
    try:
        print(f"wrote {superset_bundle.write_bundle(uri, Path(args.out))}")
    except superset_bundle.BundleError as e:
        raise SystemExit(f"superset bundle: {e}") from e


def cmd_superset(args) -> None:
    from metrics_layer import superset_local

    superset_local.serve(port=args.port)


def main(argv: list[str] | None = None) -> None:
    local.apply_airflow_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="metrics_layer")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("warehouse", help="start the embedded warehouse (unless one is configured)")
    s = sub.add_parser("seed", help="load synthetic source data")
    s.add_argument("--scale", type=float, default=1.0)
    s.add_argument("--days", type=int, default=60)
    s.add_argument("--seed", type=int, default=42)
    sub.add_parser("migrate", help="apply the layer's schema (DDL) now")
    d = sub.add_parser("dag", help="one DAG for one date (dag.test, Airflow retries off)")
    d.add_argument("dag_id")
    d.add_argument("date")
    r = sub.add_parser("run", help="a date or range through every domain DAG, then the fan-in")
    r.add_argument("date", help="first metric_date, YYYY-MM-DD")
    r.add_argument("end", nargs="?", help="last metric_date (default: DATE)")
    r.add_argument("--domain", action="append", help="only this domain (name or table); repeatable")
    r.add_argument("--per-date", action="store_true",
                   help="one DAG run per date (as `airflow backfill create` does) instead of one per range")
    m = sub.add_parser("demo", help="seed, run every domain DAG for the last days, then the fan-in")
    m.add_argument("--scale", type=float, default=1.0)
    m.add_argument("--days", type=int, default=60)
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--runs", type=int, default=7, help="number of metric_dates through today")
    sub.add_parser("catalog", help="regenerate docs/metrics.md from the registry")
    g = sub.add_parser("docs", help="Great Expectations Data Docs of the latest published dates")
    g.add_argument("--out", default=str(local.LOCAL_DIR / "data_docs"), help="site directory")
    g.add_argument("--days", type=int, default=7, help="published dates per table")
    b = sub.add_parser("superset-bundle", help="write the Superset bundle (ZIP) for the BI role")
    b.add_argument("--uri", help="SQLAlchemy URI of the read-only role (default: $SUPERSET_WAREHOUSE_URI "
                                 "or the embedded warehouse)")
    b.add_argument("--out", default=str(local.LOCAL_DIR / "superset" / "bundle.zip"))
    ss = sub.add_parser("superset", help="a local Superset with the bundle on the demo warehouse")
    ss.add_argument("--port", type=int, default=8088)
    args = p.parse_args(argv)
    {"warehouse": cmd_warehouse, "seed": cmd_seed, "migrate": cmd_migrate, "dag": cmd_dag,
     "run": cmd_run, "demo": cmd_demo, "catalog": cmd_catalog, "docs": cmd_docs,
     "superset-bundle": cmd_superset_bundle, "superset": cmd_superset}[args.cmd](args)


if __name__ == "__main__":
    main()
