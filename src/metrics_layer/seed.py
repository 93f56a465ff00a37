"""Load deterministic synthetic source data (`make seed`). Everything is generated inside
PostgreSQL by the scripts in sql/seed/ (generate_series and hash-based draws), in one
transaction: a failed seed leaves the previous data in place.

Size grows linearly with SCALE and DAYS: SCALE=1 is 1,000 customers and about 20,000 users
(seats); product events are about 125,000 x SCALE a day (SCALE=10 with DAYS=365: 10,000
customers, over 200,000 users and about 46 million events).

Speed (bench/ P7): the large tables are loaded without their indexes and key constraints, which
are rebuilt once at the end (inside the same transaction, from their own definitions in the
catalog): maintaining a primary key and a time index row by row made the load about three times
slower. Tables another table references by foreign key keep theirs.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import date

from metrics_layer.dates import utc_today
from metrics_layer.paths import SQL_DIR

log = logging.getLogger(__name__)

# a step of a seed script starts at a header comment: "-- ----...---- <name>"
_STEP = re.compile(r"^-- -{20,} (?P<name>.+)$", re.MULTILINE)


@dataclass(frozen=True)
class Step:
    script: str
    name: str
    sql: str


def steps() -> list[Step]:
    """Every seed script cut at its step headers; the part before the first header (helper
    functions, truncates) is a step named 'prepare'."""
    out = []
    for path in sorted((SQL_DIR / "seed").glob("*.sql")):
        text = path.read_text()
        marks = list(_STEP.finditer(text))
        bounds = [(0, "prepare")] + [(m.start(), m["name"].strip()) for m in marks]
        for (start, name), end in zip(bounds, [m.start() for m in marks] + [len(text)], strict=True):
            sql = text[start:end]
            if any(line.strip() and not line.strip().startswith("--") for line in sql.splitlines()):
                out.append(Step(path.stem, name, sql))
    return out


def apply_source_contract(conn) -> None:
    """Create the documented source tables (sql/sources/*.sql) if they do not exist."""
    with conn.transaction(), conn.cursor() as cur:
        for path in sorted((SQL_DIR / "sources").glob("*.sql")):
            cur.execute(path.read_text())


def _drop_indexes(cur) -> list[str]:
    """Drop the indexes and key constraints of raw tables no foreign key points at; return the
    statements that rebuild them exactly as they were."""
    cur.execute(
        """
        select format('alter table %s add constraint %I %s', con.conrelid::regclass, con.conname,
                      pg_get_constraintdef(con.oid)),
               format('alter table %s drop constraint %I', con.conrelid::regclass, con.conname)
        from pg_constraint as con
        where con.connamespace = 'raw'::regnamespace and con.contype in ('p', 'u')
          and not exists (select 1 from pg_constraint as fk
                          where fk.contype = 'f' and fk.confrelid = con.conrelid)
        union all
        select pg_get_indexdef(i.indexrelid), format('drop index %s', i.indexrelid::regclass)
        from pg_index as i
        join pg_class as t on t.oid = i.indrelid
        where t.relnamespace = 'raw'::regnamespace
          and not exists (select 1 from pg_constraint as c where c.conindid = i.indexrelid)
          and not exists (select 1 from pg_constraint as fk
                          where fk.contype = 'f' and fk.confrelid = i.indrelid)
        """
    )
    rebuild = []
    for create, drop in cur.fetchall():
        cur.execute(drop)
        rebuild.append(create)
    return rebuild


@contextlib.contextmanager
def _progress(enabled: bool, total: int):
    """A rich progress bar on the terminal (nothing when disabled or not a terminal)."""
    if not enabled:
        yield lambda description, advance=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("seed {task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task("", total=total)
        yield lambda description, advance=1: bar.update(task, description=description, advance=advance)


def seed(conn, scale: float = 1.0, days: int = 45, seed: int = 42,
         end_date: date | None = None, progress: bool = False) -> dict[str, int]:
    """Regenerate every source table; history covers the `days` days before end_date
    (default today in UTC, so data runs through yesterday). Returns row counts per table."""
    if scale <= 0 or days < 1:
        raise ValueError(f"scale must be > 0 and days >= 1 (got scale={scale}, days={days})")
    end_date = end_date or utc_today()
    apply_source_contract(conn)
    started = time.monotonic()
    work = steps()
    with conn.transaction(), conn.cursor() as cur, _progress(progress, len(work) + 2) as advance:
        cur.execute("set local time zone 'UTC'")
        cur.execute("drop table if exists pg_temp.seed_params")
        cur.execute(
            "create temp table seed_params on commit drop as select %(scale)s::numeric as scale, "
            "%(days)s::int as days, %(seed)s::bigint as seed, %(end_date)s::date as end_date",
            {"scale": scale, "days": days, "seed": seed, "end_date": end_date},
        )
        rebuild = _drop_indexes(cur)
        advance("indexes dropped for the load")
        for step in work:
            advance(f"{step.script}: {step.name}", advance=0)
            t = time.monotonic()
            cur.execute(step.sql)
            log.debug("seed %s %s: %.2fs", step.script, step.name, time.monotonic() - t)
            advance(f"{step.script}: {step.name}")
        advance(f"rebuilding {len(rebuild)} indexes and keys", advance=0)
        for stmt in rebuild:
            cur.execute(stmt)
        advance(f"rebuilt {len(rebuild)} indexes and keys")
        cur.execute(
            "select relname::text, reltuples::bigint from pg_class "
            "where relnamespace = %s::regnamespace and relkind = 'r' order by relname",
            ("raw",),
        )
        counts = dict(cur.fetchall())
    log.info("seeded scale=%s days=%s seed=%s end=%s: %s rows in %.1fs", scale, days, seed, end_date,
             f"{sum(counts.values()):,}", time.monotonic() - started)
    return counts
