"""Growth between scales (issue #10): the daily run and the storage at one more SCALE.

`make bench` gives SCALE=1 and SCALE=10; this adds a point between them without the whole
benchmark: `make bench-growth GROWTH_SCALE=3` seeds the benchmark server's database
`growth_s<scale>` with 90 days (the short warehouse's history), builds them through the range
path, then times the daily run (median of 3 after a warm-up, like P2's short side) and the
size of each layer table. Results go to bench/results/growth-scale<s>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench import BENCH_DIR, RESULTS, SETTINGS, Warehouse, backfill, daily_run, log, machine, seed  # noqa: E402

from metrics_layer import local  # noqa: E402

SIZES = """
select format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid)
from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
where c.relkind = 'r' and n.nspname in ('raw', 'metrics_state', 'entity')
order by 2 desc
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=3.0)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from metrics_layer.dates import utc_today

    server = local.embedded_server(pgdata=BENCH_DIR / "pgdata", settings=SETTINGS)
    wh = Warehouse(server, f"growth_s{args.scale:g}")
    seeded = seed(wh, args.scale, args.days, reuse=True)
    today = utc_today()
    dates = [today - timedelta(days=i) for i in range(args.days - 1, 0, -1)]
    log(f"{len(dates)} dates through the range path")
    wh.reset_layer()
    wh.use()
    history = backfill(wh, dates, per_date=False)
    daily_run(wh, today, f"scheduled__{today}_warm")
    runs, steps = [], []
    for i in range(args.repeat):
        t: dict = {}
        runs.append(daily_run(wh, today, f"scheduled__{today}_{i}", t))
        steps.append(t)
    daily = statistics.median(runs)
    log(f"daily run, {args.days} days of history, SCALE={args.scale:g}: {daily:.2f}s")
    with wh.connect() as conn:
        sizes = {t: round(b / 2**20, 1) for t, b in conn.execute(SIZES).fetchall()}
        db = conn.execute("select pg_database_size(current_database())").fetchone()[0]
    out = {"machine": machine(), "scale": args.scale, "days": args.days,
           "seed_rows": sum(seeded["rows"].values()), "seed_seconds": round(seeded["seconds"], 1),
           "history_range_seconds": round(history, 1), "daily_seconds": [round(x, 2) for x in runs],
           "daily_median_seconds": round(daily, 2), "daily_steps": steps[runs.index(daily)],
           "database_size_gb": round(db / 2**30, 2), "table_mb": sizes}
    target = RESULTS / f"growth-scale{args.scale:g}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    log(f"written to {target} ({time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
