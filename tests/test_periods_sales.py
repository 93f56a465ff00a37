"""Period boundaries of the sales domain (tests/fixtures/periods_sales.sql): month-to-date at a
month's first and last day and across a year end, and the snapshot instant itself (a rep hired
or gone, an opportunity created or closed exactly at 00:00 UTC on D). Expected values are worked
out by hand below.

metric_date D is the snapshot as of 00:00 UTC on D: it sees rows before D, so its last complete
day is D-1 and its month is the month of D-1. MTD = [first day of the month of D-1, D).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from helpers import load_fixture, rows_by_key
from metrics_layer import pipeline
from metrics_layer.registry import load_registry

SALES = load_registry()["sales"]
TABLE = "entity.metrics_sales"


def _build(conn, metric_date: date) -> dict:
    """{rep_id: (deals_won_mtd, revenue_closed_mtd, open_opportunities, total_pipeline_value)}"""
    pipeline.refresh_domain(conn, SALES, metric_date, run_id="periods")
    rows = rows_by_key(conn, TABLE, metric_date, "rep_id")
    return {rep: (r["deals_won_mtd"], r["revenue_closed_mtd"], r["open_opportunities"],
                  r["total_pipeline_value"]) for rep, r in sorted(rows.items())}


def _usd(value: str) -> Decimal:
    return Decimal(value)


NOTHING = (0, _usd("0"), 0, _usd("0"))


def test_on_the_first_of_a_month_mtd_is_the_whole_previous_month(conn):
    load_fixture(conn, "periods_sales.sql")
    # D = 2026-04-01: the snapshot closes March, MTD = [03-01, 04-01), all 31 days of March.
    # Active: Mia (1), Yuri (2), Lev (4): Lev leaves at 04-01 00:00, not before D, so he is still
    #   there; Hana is hired at 04-01 00:00, not before D, so not yet.
    # Mia won #102 (03-01 00:00) 1000 + #103 (03-15) 2000 + #104 (03-30 23:59) 4000 + #105
    #   (03-31 23:59) 8000 = 4 deals, 15000. #101 (02-28 23:59) is February, #106 was lost,
    #   #107 closes at 04-01 00:00 (not before D).
    #   Open on D: #107 (closes at D, not before) = 1, 32000; #108 is created at 04-01 00:00, not
    #   before D: not in the pipeline yet.
    # Lev won #401 on 03-31 12:00 -> 1 deal, 50; nothing open. Yuri: nothing before September.
    assert _build(conn, date(2026, 4, 1)) == {
        1: (4, _usd("15000.00"), 1, _usd("32000.00")),
        2: NOTHING,
        4: (1, _usd("50.00"), 0, _usd("0")),
    }


def test_the_last_day_of_a_month_is_in_the_mtd_of_exactly_one_snapshot(conn):
    load_fixture(conn, "periods_sales.sql")
    # D = 2026-03-31: MTD = [03-01, 03-31), March 1..30.
    #   Mia: #102 1000 + #103 2000 + #104 (03-30 23:59) 4000 = 3 deals, 7000; #105 closes 03-31
    #   23:59, not before D. Open: #105 (closes on D, after 00:00) 8000 + #107 32000 = 2, 40000.
    #   Lev: #401 closes 03-31 12:00, not before D: MTD 0, open 1 with 50. Active: 1, 2, 4.
    assert _build(conn, date(2026, 3, 31)) == {
        1: (3, _usd("7000.00"), 2, _usd("40000.00")),
        2: NOTHING,
        4: (0, _usd("0"), 1, _usd("50.00")),
    }
    # D = 2026-04-01 adds March 31: Mia 3 + 1 = 4 deals, 7000 + 8000 = 15000; Lev 1, 50.
    rows = _build(conn, date(2026, 4, 1))
    assert (rows[1][:2], rows[4][:2]) == ((4, _usd("15000.00")), (1, _usd("50.00")))
    # D = 2026-04-02: MTD = [04-01, 04-02), April only: Mia #107 (04-01 00:00) = 1, 32000; March
    #   is gone. Open: #108 (created 04-01 00:00, before 04-02) = 1, 64000.
    #   Active: 1, 2 and Hana (3, hired 04-01 00:00 < 04-02); Lev (gone 04-01 00:00) is not.
    assert _build(conn, date(2026, 4, 2)) == {
        1: (1, _usd("32000.00"), 1, _usd("64000.00")),
        2: NOTHING,
        3: NOTHING,
    }
    # so March 31's 8000 (#105) is counted by exactly one snapshot, 04-01's (7000 -> 15000 -> April)


def test_mtd_across_a_year_end(conn):
    load_fixture(conn, "periods_sales.sql")
    # Active from 04-02 on: Mia (1), Yuri (2), Hana (3). Mia's #108 (64000) stays open.
    mia = (0, _usd("0"), 1, _usd("64000.00"))
    # D = 2026-12-31: MTD = [12-01, 12-31). Yuri: #202 (12-01 00:00) 500 = 1 deal; #201 is
    #   November (11-30 23:59), #203 closes 12-31 23:59 (not before D), #205 was lost.
    #   Open: #203 900 + #204 1100 = 2, 2000.
    assert _build(conn, date(2026, 12, 31)) == {
        1: mia, 2: (1, _usd("500.00"), 2, _usd("2000.00")), 3: NOTHING}
    # D = 2027-01-01: the snapshot closes December 2026: MTD = [2026-12-01, 2027-01-01).
    #   Yuri: #202 500 + #203 (12-31 23:59) 900 = 2 deals, 1400; #204 closes at 2027-01-01 00:00,
    #   not before D: still open, 1 with 1100.
    assert _build(conn, date(2027, 1, 1)) == {
        1: mia, 2: (2, _usd("1400.00"), 1, _usd("1100.00")), 3: NOTHING}
    # D = 2027-01-02: MTD = [2027-01-01, 2027-01-02): Yuri #204 = 1 deal, 1100; nothing open.
    assert _build(conn, date(2027, 1, 2)) == {
        1: mia, 2: (1, _usd("1100.00"), 0, _usd("0")), 3: NOTHING}
