"""The synthetic generator: deterministic, and shaped like the data it stands in for."""

from __future__ import annotations

from datetime import date

from metrics_layer import seed

END = date(2026, 6, 1)
TABLES = ("customers", "subscriptions", "users", "product_sessions", "product_events",
          "support_tickets", "devices", "device_telemetry")


def _fingerprint(conn) -> dict[str, str]:
    return {t: conn.execute(f"select md5(string_agg(x::text, '|' order by x::text)) from raw.{t} x").fetchone()[0]
            for t in TABLES}


def test_same_scale_and_seed_give_the_same_data(conn):
    seed.seed(conn, scale=0.03, days=10, seed=1, end_date=END)
    first = _fingerprint(conn)
    seed.seed(conn, scale=0.03, days=10, seed=1, end_date=END)
    assert _fingerprint(conn) == first
    seed.seed(conn, scale=0.03, days=10, seed=2, end_date=END)
    other = _fingerprint(conn)
    assert all(other[t] != first[t] for t in ("customers", "users", "product_events"))


def test_generated_data_has_the_promised_shapes(conn):
    counts = seed.seed(conn, scale=0.2, days=30, seed=42, end_date=END)
    assert counts["customers"] == 200
    q = lambda sql: conn.execute(sql).fetchone()  # noqa: E731
    # history runs through the day before end_date, never into it
    assert q("select max(occurred_at)::date, min(occurred_at)::date from raw.product_events") == (
        date(2026, 5, 31), date(2026, 5, 2))
    segments = dict(conn.execute("select segment, count(*) from raw.customers group by 1").fetchall())
    assert segments == {"enterprise": 20, "mid_market": 60, "smb": 120}
    churned, new = q("select count(*) filter (where churned_at is not null), "
                     "count(*) filter (where created_at >= '2026-05-02') from raw.customers")
    assert 0 < churned < 40 and 0 < new < 50
    weekday, weekend = q("select avg(n) filter (where extract(isodow from d) < 6), "
                         "avg(n) filter (where extract(isodow from d) >= 6) from "
                         "(select started_at::date d, count(*) n from raw.product_sessions group by 1) s")
    assert weekday > 2 * weekend
    # long-tailed usage: the top 10% of users produce far more than 10% of events
    top_share = q("select sum(n) filter (where r <= 0.1) / sum(n) from (select count(*) n, "
                  "percent_rank() over (order by count(*) desc) r from raw.product_events group by user_id) u")[0]
    assert top_share > 0.25
    unresolved, tickets = q("select count(*) filter (where resolved_at is null), count(*) from raw.support_tickets")
    assert 0.05 < unresolved / tickets < 0.3
    unhealthy = q("select avg((health_score < 60)::int) from raw.device_telemetry")[0]
    assert 0.03 < unhealthy < 0.2
    assert q("select count(*) from raw.customers where customer_name like '%''%' or customer_name ~ '[^ -~]'")[0] > 0
