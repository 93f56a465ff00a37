"""Command line behind the Makefile: `python -m metrics_layer.cli {warehouse,seed,dag,demo,catalog}`.

Airflow is imported only after the local environment is set, so Airflow picks up .local/.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
from datetime import date, timedelta

from metrics_layer import local
from metrics_layer.paths import DOCS_DIR

GUIDE_QUERIES = DOCS_DIR / "guide_queries"
BASIC_QUERY = GUIDE_QUERIES / "01_basic_query.sql"


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
    counts = seed.seed(_connect(), scale=args.scale, days=args.days, seed=args.seed)
    print(f"seeded SCALE={args.scale} DAYS={args.days} SEED={args.seed} through "
          f"{date.today() - timedelta(days=1)} in {time.monotonic() - started:.1f}s")
    for table, n in counts.items():
        print(f"  raw.{table:<18} {n:>10,}")


def cmd_dag(args) -> None:
    """`airflow dags test DAG DATE` against the same warehouse as the demo."""
    print(local.ensure_warehouse())
    local.ensure_airflow_db()
    rc = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", args.dag_id, args.date],
                        env=os.environ.copy()).returncode
    sys.exit(rc)


def _run_dag(dagbag, dag_id: str, logical_date=None) -> str:
    dag = dagbag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(f"DAG {dag_id!r} not found; import errors: {dagbag.import_errors}")
    kwargs = {} if logical_date is None else {"logical_date": logical_date}
    return dag.test(**kwargs).state


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
    import pendulum

    from metrics_layer import seed
    from metrics_layer.registry import load_registry

    started = time.monotonic()
    log_path = local.LOCAL_DIR / "demo.log"
    log_path.unlink(missing_ok=True)
    print(f"[1/5] warehouse: {local.ensure_warehouse()}")
    local.ensure_airflow_db()
    print(f"[2/5] seeding SCALE={args.scale} DAYS={args.days} SEED={args.seed} (history through yesterday)")
    counts = seed.seed(_connect(), scale=args.scale, days=args.days, seed=args.seed)
    print("      " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))

    domains = list(load_registry().values())
    today = date.today()
    dates = [today - timedelta(days=i) for i in range(args.runs - 1, -1, -1)]
    print(f"[3/5] running {len(domains)} domain DAGs for {dates[0]}..{dates[-1]} "
          f"(task logs: {log_path})")
    with _output_to(log_path):
        from airflow.dag_processing.dagbag import DagBag

        dagbag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if dagbag.import_errors:
        raise SystemExit(f"DAG import errors: {dagbag.import_errors}")
    for domain in domains:
        t = time.monotonic()
        for d in dates:
            with _output_to(log_path):
                state = _run_dag(dagbag, domain.table, pendulum.datetime(d.year, d.month, d.day, tz="UTC"))
            if state != "success":
                raise SystemExit(f"{domain.table} {state} for {d}; see {log_path}")
        print(f"      {domain.table}: {len(dates)} runs succeeded in {time.monotonic() - t:.1f}s")
    print("[4/5] running the fan-in metrics_unified")
    with _output_to(log_path):
        state = _run_dag(dagbag, "metrics_unified")
    if state != "success":
        raise SystemExit(f"metrics_unified {state}; see {log_path}")
    conn = _connect()
    print(f"\nToday ({today}), per domain:")
    for domain in domains:
        print(f"  {domain.name:<17} {headline(conn, domain, today)}")
    n_unified = conn.execute("select count(*) from entity.metrics_unified_domains where metric_date = %s",
                             (today,)).fetchone()[0]
    print(f"  {'unified':<17} {n_unified:,} metric values in metrics_unified_domains")
    print(f"\n[5/5] the guide's Basic Query ({time.monotonic() - started:.0f}s so far):\n")
    query = BASIC_QUERY.read_text().split("\n", 1)[1]  # drop the provenance comment
    print(query)
    print_query(conn, query)
    if local.EMBEDDED:
        print("\nConnect with psql (search_path includes entity, days are UTC):")
        print(f"  {local.psql_command()}")
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s")


def cmd_catalog(_args) -> None:
    from metrics_layer import catalog

    catalog.write_markdown()
    print(f"wrote {catalog.CATALOG_MD}")


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
    d = sub.add_parser("dag", help="airflow dags test DAG DATE")
    d.add_argument("dag_id")
    d.add_argument("date")
    m = sub.add_parser("demo", help="seed, run every domain DAG for the last days, then the fan-in")
    m.add_argument("--scale", type=float, default=1.0)
    m.add_argument("--days", type=int, default=60)
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--runs", type=int, default=7, help="number of metric_dates through today")
    sub.add_parser("catalog", help="regenerate docs/metrics.md from the registry")
    args = p.parse_args(argv)
    {"warehouse": cmd_warehouse, "seed": cmd_seed, "dag": cmd_dag, "demo": cmd_demo,
     "catalog": cmd_catalog}[args.cmd](args)


if __name__ == "__main__":
    main()
