"""P1's denominator: the same day computed the naive way, as a metrics layer without compact
state or maintained comparisons would.

For metric_date D and each date its comparisons read (D-1, D-7, D - 1 month, D - 1 year, D-364),
every domain is computed from raw source rows: the domain's own build query, with each
`metrics_state.<state>` it reads replaced by that state's build query over the window's days
(every rolling window recomputed from raw events). Then the company overview of D from those
rows, the long-format unpivot (the registry's macro), and the comparisons of D's values with the
five earlier dates' (what metrics_api adds). Period-to-date totals are left out of the naive
side: recomputing every day of a year for the one additive metric would flatter the ratio.

Rows are kept in temporary tables so that nothing is returned to Python.
"""

from __future__ import annotations

import re
import time
from datetime import date, timedelta

from metrics_layer import pipeline, sqlrender
from metrics_layer.registry import derived_domains, source_domains


def _naive_build(domain) -> str:
    """The domain's build query with every state read replaced by the state's raw build."""
    sql = pipeline.build_select(domain)
    for state in domain.states:
        text = sqlrender.render(pipeline.states()[state].sql)
        select = text[text.index("\nwith"):]  # drop the `insert into metrics_state...` line
        sql = re.sub(rf"\b(from|join)\s+metrics_state\.{state}\b", lambda m, s=select: f"{m.group(1)} ({s})", sql)
    return sql


def run(wh, day: date) -> dict:
    parts: dict[str, float] = {}
    started = time.perf_counter()
    with pipeline.connect() as conn, conn.cursor() as cur:
        cur.execute("select (%(d)s::date - interval '1 month')::date, (%(d)s::date - interval '1 year')::date",
                    {"d": day})
        month_ago, year_ago = cur.fetchone()
        dates = sorted({day, day - timedelta(days=1), day - timedelta(days=7), month_ago, year_ago,
                        day - timedelta(days=364)})
        cur.execute("create temp table naive_unified (metric_date date, domain text, entity_id text, "
                    "metric_name text, metric_value numeric)")
        env = sqlrender._env()
        for domain in source_domains():
            t = time.perf_counter()
            sql = _naive_build(domain)
            cur.execute(f"create temp table naive_{domain.table} as select * from ({pipeline.build_select(domain)}) "  # noqa: S608
                        "as q limit 0", {"metric_date": day})
            for x in dates:
                params = {"metric_date": x}
                window = [x - timedelta(days=i) for i in range(domain.state_window_days, 0, -1)]
                params.update(days=window, first_day=window[0], last_day=window[-1])
                cur.execute(f"insert into naive_{domain.table} select * from ({sql}) as q", params)  # noqa: S608
            parts[f"{domain.name} ({len(dates)} dates from raw rows)"] = time.perf_counter() - t
        t = time.perf_counter()
        for domain in derived_domains():
            sql = pipeline.build_select(domain)
            for other in source_domains():
                sql = sql.replace(f"entity.{other.table}", f"naive_{other.table}")
            cur.execute(f"create temp table naive_{domain.table} as select * from ({sql}) as q",  # noqa: S608
                        {"metric_date": day})
        parts["overview"] = time.perf_counter() - t
        t = time.perf_counter()
        for domain in [*source_domains(), *derived_domains()]:
            unpivot = env.from_string(
                "{% from 'unified/_unpivot.sql' import unpivot %}"
                "insert into naive_unified select t.metric_date, '{{ d.name }}', t.{{ d.id_column }}::text, "
                "m.metric_name, m.metric_value from naive_{{ d.table }} as t {{ unpivot(d) }} "
                "where m.metric_value is not null").render(d=domain)
            cur.execute(unpivot)
        parts["unpivot"] = time.perf_counter() - t
        t = time.perf_counter()
        cur.execute(
            """
            create temp table naive_api as
            select u.*, u.metric_value - d1.metric_value as change_1d,
                   round(100 * (u.metric_value - d1.metric_value) / nullif(abs(d1.metric_value), 0), 2) as pct_1d,
                   u.metric_value - d7.metric_value as change_7d,
                   round(100 * (u.metric_value - d7.metric_value) / nullif(abs(d7.metric_value), 0), 2) as pct_7d,
                   u.metric_value - m1.metric_value as change_1m,
                   round(100 * (u.metric_value - m1.metric_value) / nullif(abs(m1.metric_value), 0), 2) as pct_1m,
                   u.metric_value - y1.metric_value as change_1y,
                   round(100 * (u.metric_value - y1.metric_value) / nullif(abs(y1.metric_value), 0), 2) as pct_1y,
                   u.metric_value - w52.metric_value as change_364d,
                   round(100 * (u.metric_value - w52.metric_value) / nullif(abs(w52.metric_value), 0), 2) as pct_364d
            from naive_unified as u
            left join naive_unified as d1 on (d1.metric_date, d1.domain, d1.entity_id, d1.metric_name)
                = (u.metric_date - 1, u.domain, u.entity_id, u.metric_name)
            left join naive_unified as d7 on (d7.metric_date, d7.domain, d7.entity_id, d7.metric_name)
                = (u.metric_date - 7, u.domain, u.entity_id, u.metric_name)
            left join naive_unified as m1 on (m1.metric_date, m1.domain, m1.entity_id, m1.metric_name)
                = (%(month_ago)s, u.domain, u.entity_id, u.metric_name)
            left join naive_unified as y1 on (y1.metric_date, y1.domain, y1.entity_id, y1.metric_name)
                = (%(year_ago)s, u.domain, u.entity_id, u.metric_name)
            left join naive_unified as w52 on (w52.metric_date, w52.domain, w52.entity_id, w52.metric_name)
                = (u.metric_date - 364, u.domain, u.entity_id, u.metric_name)
            where u.metric_date = %(d)s
            """,
            {"d": day, "month_ago": month_ago, "year_ago": year_ago},
        )
        rows = cur.rowcount
        parts["comparisons"] = time.perf_counter() - t
        cur.execute("discard temp")
    return {"seconds": time.perf_counter() - started, "dates": [str(d) for d in dates], "api_rows": rows,
            "parts": {k: round(v, 2) for k, v in parts.items()}}
