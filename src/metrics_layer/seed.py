"""Load deterministic synthetic source data (`make seed`). Everything is generated inside
PostgreSQL by the scripts in sql/seed/ (generate_series and hash-based draws), in one
transaction: a failed seed leaves the previous data in place."""

from __future__ import annotations

import logging
import time
from datetime import date

from metrics_layer.dates import utc_today
from metrics_layer.paths import SQL_DIR

log = logging.getLogger(__name__)


def apply_source_contract(conn) -> None:
    """Create the documented source tables (sql/sources/*.sql) if they do not exist."""
    with conn.transaction(), conn.cursor() as cur:
        for path in sorted((SQL_DIR / "sources").glob("*.sql")):
            cur.execute(path.read_text())


def seed(conn, scale: float = 1.0, days: int = 45, seed: int = 42,
         end_date: date | None = None) -> dict[str, int]:
    """Regenerate every source table; history covers the `days` days before end_date
    (default today in UTC, so data runs through yesterday). Returns row counts per table."""
    if scale <= 0 or days < 1:
        raise ValueError(f"scale must be > 0 and days >= 1 (got scale={scale}, days={days})")
    end_date = end_date or utc_today()
    apply_source_contract(conn)
    started = time.monotonic()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("set local time zone 'UTC'")
        cur.execute("drop table if exists pg_temp.seed_params")
        cur.execute(
            "create temp table seed_params on commit drop as select %(scale)s::numeric as scale, "
            "%(days)s::int as days, %(seed)s::bigint as seed, %(end_date)s::date as end_date",
            {"scale": scale, "days": days, "seed": seed, "end_date": end_date},
        )
        for path in sorted((SQL_DIR / "seed").glob("*.sql")):
            t = time.monotonic()
            cur.execute(path.read_text())
            log.info("seed %s: %.1fs", path.name, time.monotonic() - t)
        cur.execute(
            "select relname::text, reltuples::bigint from pg_class "
            "where relnamespace = %s::regnamespace and relkind = 'r' order by relname",
            ("raw",),
        )
        counts = dict(cur.fetchall())
    log.info("seeded scale=%s days=%s seed=%s end=%s in %.1fs", scale, days, seed, end_date,
             time.monotonic() - started)
    return counts
