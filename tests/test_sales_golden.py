"""Golden tests: every sales metric on a tiny hand-built fixture
(tests/fixtures/sales_golden.sql), expected values worked out by hand below."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from helpers import load_fixture, rows_by_key, table_dump
from metrics_layer import pipeline, validation
from metrics_layer.registry import load_registry

SALES = load_registry()["sales"]
D = date(2026, 3, 10)
TABLE = "entity.metrics_sales"

# D = 2026-03-10: 30d [02-08, 03-10), 90d [2025-12-10, 03-10), MTD [03-01, 03-10).
# Ana (1):
#   Open on D: #1 (10000, never closed), #3 (4000, won on 03-12, after D), #9 (500, lost at
#   03-10 00:00, not before D) -> 3 open, 14500. #2 is created on D: not yet in the pipeline.
#   pipeline_value repeats total_pipeline_value (the name the guide's Pipeline Velocity uses).
#   Won in 90d: #4 (3000, 03-01 00:00), #5 (6000, 02-28 12:00), #8 (1000, 12-10 00:00) -> 3,
#   10000; lost in 90d: #6 -> 1 (#7 was lost at 12-09 23:00, before the window).
#   win_rate = 3 / 4 = 0.75; coverage = 14500 / 10000 = 1.45; avg deal = 10000 / 3 = 3333.33.
#   Cycle: #4 02-01 -> 03-01 = 28 d, #5 01-01 -> 02-28 12:00 = 58.5 d, #8 11-01 -> 12-10 = 39 d
#   -> 125.5 / 3 = 41.83. MTD: #4 -> 1 deal, 3000.
#   Activity in 30d: calls #1 (02-08 00:00), #2 (03-09 23:59) = 2 (#3 before, #4 on D),
#   emails #5, #6 = 2, meeting #7 = 1.
#   Leads: MQL in 30d: 1 (02-08 00:00), 6 (03-01) = 2 (2 at 02-07 23:59, 5 on D). MQL in 90d:
#   1, 2, 3 (12-10 00:00), 6 = 4 (4 at 12-09 23:00); converted before D: 1 (3 on D) -> 0.25.
ANA = {
    "rep_name": "Ana Ortiz", "team": "mid_market",
    "total_pipeline_value": Decimal("14500.00"), "open_opportunities": 3,
    "pipeline_coverage_ratio": Decimal("1.4500"), "pipeline_value": Decimal("14500.00"),
    "deals_won_mtd": 1,
    "revenue_closed_mtd": Decimal("3000.00"), "win_rate": Decimal("0.7500"),
    "avg_deal_size": Decimal("3333.33"), "avg_sales_cycle_days": Decimal("41.83"),
    "calls_made_30d": 2, "emails_sent_30d": 2, "meetings_held_30d": 1,
    "total_mqls": 2, "mql_conversion_rate": Decimal("0.2500"),
}
# Ben (2): no opportunity, activity or lead: counts 0, every ratio NULL (zero denominators).
BEN = {
    "rep_name": "Ben O'Connor", "team": "smb",
    "total_pipeline_value": Decimal("0"), "open_opportunities": 0, "pipeline_coverage_ratio": None,
    "pipeline_value": Decimal("0"),
    "deals_won_mtd": 0, "revenue_closed_mtd": Decimal("0"), "win_rate": None,
    "avg_deal_size": None, "avg_sales_cycle_days": None,
    "calls_made_30d": 0, "emails_sent_30d": 0, "meetings_held_30d": 0,
    "total_mqls": 0, "mql_conversion_rate": None,
}
# Dev (4) leaves at 09:00 on D, so is still active as of 00:00. Won #10 (2500) on 03-05 after
#   13 days; nothing open -> pipeline 0 and coverage 0 / 2500 = 0 (not NULL: the denominator is
#   not 0). One meeting (03-09). Lead 8: MQL 03-02, converted 03-05 -> 1 MQL, rate 1.
DEV = {
    "rep_name": "Dev Leaves-on-D", "team": "enterprise",
    "total_pipeline_value": Decimal("0"), "open_opportunities": 0,
    "pipeline_coverage_ratio": Decimal("0.0000"), "pipeline_value": Decimal("0"),
    "deals_won_mtd": 1,
    "revenue_closed_mtd": Decimal("2500.00"), "win_rate": Decimal("1.0000"),
    "avg_deal_size": Decimal("2500.00"), "avg_sales_cycle_days": Decimal("13.00"),
    "calls_made_30d": 0, "emails_sent_30d": 0, "meetings_held_30d": 1,
    "total_mqls": 1, "mql_conversion_rate": Decimal("1.0000"),
}


def _build(conn, metric_date=D):
    pipeline.refresh_domain(conn, SALES, metric_date, run_id="golden")
    return rows_by_key(conn, TABLE, metric_date, "rep_id")


def test_every_metric_matches_hand_computed_values(conn):
    load_fixture(conn, "sales_golden.sql")
    rows = _build(conn)
    # Chloé (3) left on 03-09, Eitan (5) starts at 09:00 on D: neither is active as of 00:00 on D
    assert sorted(rows) == [1, 2, 4]
    for rep_id, expected in ((1, ANA), (2, BEN), (4, DEV)):
        got = {k: rows[rep_id][k] for k in expected}
        assert got == expected, f"rep {rep_id}"
    assert [m.name for m in SALES.implemented] == [k for k in ANA if k not in ("rep_name", "team")]


def test_placeholders_exist_as_null_columns(conn):
    load_fixture(conn, "sales_golden.sql")
    rows = _build(conn)
    assert {m.name: m.requires for m in SALES.placeholders} == {
        "quota_attainment_pct": "Quota data", "forecast_amount": "Forecasting model",
        "stalled_deal_count": "Stage duration analysis", "renewal_rate": "Subscription tracking"}
    assert all(rows[r][m.name] is None for r in rows for m in SALES.placeholders)


def test_month_to_date_on_the_first_is_the_previous_month(conn):
    load_fixture(conn, "sales_golden.sql")
    # D = 03-01 closes February: MTD = [02-01, 03-01). Active: 1, 2, 3 (leaves 03-09), 4.
    # Ana won #5 (6000, 02-28 12:00) -> 1 deal, 6000; #4 closes at 03-01 00:00 (not before D),
    #   #6 was lost. Dev's #10 closes 03-05; Ben and Chloé won nothing -> 0.
    rows = _build(conn, date(2026, 3, 1))
    assert sorted(rows) == [1, 2, 3, 4]
    assert {rep: (r["deals_won_mtd"], r["revenue_closed_mtd"]) for rep, r in rows.items()} == {
        1: (1, Decimal("6000.00")), 2: (0, 0), 3: (0, 0), 4: (0, 0)}
    ana = rows[1]
    # #4 closes at 03-01 00:00: still open as of 00:00 on 03-01. Open: #1 10000, #3 4000, #4 3000
    #   = 17000 (#6 and the 90d-old ones are closed, #9 is created 03-02).
    # 90d [2025-12-01, 03-01): won #5 (6000), #8 (1000); lost #6, #7 (12-09 23:00 is inside now)
    #   -> win rate 2 / 4 = 0.5; coverage 17000 / 7000 = 2.4286; cycle (58.5 + 39) / 2 = 48.75.
    assert (ana["open_opportunities"], ana["total_pipeline_value"]) == (3, Decimal("17000.00"))
    assert (ana["win_rate"], ana["pipeline_coverage_ratio"]) == (Decimal("0.5000"), Decimal("2.4286"))
    assert (ana["avg_deal_size"], ana["avg_sales_cycle_days"]) == (Decimal("3500.00"), Decimal("48.75"))
    # Chloé's open #11 (8000) is her pipeline while she is still there
    assert (rows[3]["open_opportunities"], rows[3]["total_pipeline_value"]) == (1, Decimal("8000.00"))


def test_the_suite_passes_and_counts_the_active_reps(conn):
    load_fixture(conn, "sales_golden.sql")
    pipeline.stage(conn, SALES, D)
    summary = validation.validate_day(SALES, D)
    assert summary.success, summary.describe()
    # a rep the build did not see (3 rows staged, 4 active reps in the source): the count check fails
    conn.execute("insert into raw.sales_reps values (6, 'Late Loaded', 'smb', '2026-01-01 00:00+00', null)")
    summary = validation.validate_day(SALES, D)
    assert [f.expectation for f in summary.failures] == ["unexpected_rows_expectation"]


def test_state_holds_one_row_per_rep_and_day(conn):
    load_fixture(conn, "sales_golden.sql")
    _build(conn)
    rows = conn.execute("select activity_date::text, rep_id, calls, emails, meetings "
                        "from metrics_state.sales_activity_daily order by 1, 2").fetchall()
    # 30 days [02-08, 03-10) were built; 02-07 and 03-10 are outside
    assert rows == [("2026-02-08", 1, 1, 0, 0), ("2026-02-20", 1, 0, 0, 1), ("2026-03-01", 1, 0, 2, 0),
                    ("2026-03-01", 3, 1, 0, 0), ("2026-03-09", 1, 1, 0, 0), ("2026-03-09", 4, 0, 0, 1)]
    # a second refresh of D rebuilds only the late-data lookback (lookback_days 3: 03-07..03-09)
    # and finds no day changed
    again = pipeline.refresh_state(conn, "sales_activity_daily", D, SALES.lookback_days)
    assert (again.rebuilt, again.changed) == ([date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9)], [])


def test_rerunning_a_date_gives_identical_rows(conn):
    load_fixture(conn, "sales_golden.sql")
    _build(conn)
    first = table_dump(conn, TABLE)
    _build(conn, date(2026, 3, 9))
    _build(conn)
    assert [r for r in table_dump(conn, TABLE) if "2026-03-10" in r[0]] == first


def test_dimensions_are_todays_values_so_a_rebuild_shows_them_for_past_dates(conn):
    # The sources keep no history (registry as_of, docs/sources.md): rep_name, team, an
    # opportunity's owner and amount, a lead's assigned rep are today's values.
    load_fixture(conn, "sales_golden.sql")
    rows = _build(conn)
    assert (rows[1]["rep_name"], rows[1]["team"]) == ("Ana Ortiz", "mid_market")
    # after D: Ana is renamed and moves team, her open #1 (10000) goes to Ben, her won #4 is
    # amended from 3000 to 3500, her lead 6 (MQL 03-01) is reassigned to Ben
    conn.execute("update raw.sales_reps set rep_name = 'Ana Ortiz-Lee', team = 'enterprise' "
                 "where rep_id = 1")
    conn.execute("update raw.opportunities set rep_id = 2 where opportunity_id = 1")
    conn.execute("update raw.opportunities set amount = 3500 where opportunity_id = 4")
    conn.execute("update raw.leads set assigned_rep_id = 2 where lead_id = 6")
    # the published day keeps the values it was built with ...
    ana = rows_by_key(conn, TABLE, D, "rep_id")[1]
    assert (ana["rep_name"], ana["team"], ana["total_pipeline_value"], ana["revenue_closed_mtd"]) == (
        "Ana Ortiz", "mid_market", Decimal("14500.00"), Decimal("3000.00"))
    # ... until D is rebuilt (a backfill or rerun): then D shows today's name, team, owners, amounts.
    # Ana: open #3 4000 + #9 500 = 2, 4500; MTD #4 = 1, 3500; won 90d 3500 + 6000 + 1000 = 10500
    #   -> coverage 4500 / 10500 = 0.4286, avg deal 3500.00; MQLs 30d: lead 1 only = 1; 90d
    #   cohort 1, 2, 3 with 1 converted -> 1/3 = 0.3333.
    # Ben: open #1 = 1, 10000; won nothing -> coverage NULL; lead 6 -> 1 MQL, 0 converted -> 0.
    pipeline.refresh_domain(conn, SALES, D, run_id="backfill")
    rows = rows_by_key(conn, TABLE, D, "rep_id")
    keys = ("rep_name", "team", "open_opportunities", "total_pipeline_value", "deals_won_mtd",
            "revenue_closed_mtd", "pipeline_coverage_ratio", "avg_deal_size", "total_mqls",
            "mql_conversion_rate")
    assert {rep: tuple(rows[rep][k] for k in keys) for rep in (1, 2)} == {
        1: ("Ana Ortiz-Lee", "enterprise", 2, Decimal("4500.00"), 1, Decimal("3500.00"),
            Decimal("0.4286"), Decimal("3500.00"), 1, Decimal("0.3333")),
        2: ("Ben O'Connor", "smb", 1, Decimal("10000.00"), 0, Decimal("0"), None, None, 1,
            Decimal("0.0000")),
    }
