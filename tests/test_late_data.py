"""Late data reaches the numbers readers already saw, and every change is on the record.

A hand-built product fixture (one row per day for the whole product, so every value is easy to
follow). D = 2026-03-10; the metric_date X counts events before X: DAU(X) = users active on X-1,
WAU(X) = users active in [X-7, X).

    user 1: an event every day 2026-03-01 .. 03-09
    user 2: an event on 03-05
    user 3: an event on 03-07 that LANDS LATE, after 03-08 and 03-09 were published

Published before the late event: DAU(03-08) = 1 (user 1 on 03-07), WAU(03-08) = |{1, 2}| = 2,
WAU(03-09) = |[03-02, 03-09): {1, 2}| = 2. After the run for D with the 3-day lookback (state days
03-07, 03-08, 03-09 rebuilt; 03-07 changed): DAU(03-08) = 2, WAU(03-08) = 3, WAU(03-09) = 3, and
the published days whose window holds 03-07 are 03-08 and 03-09 (not 03-07: its window ends
before 03-07). DAU(03-09) = 1 stays.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pendulum
import psycopg
import pytest

from metrics_layer import pipeline, seed
from metrics_layer.registry import load_registry

PA = load_registry()["product"]
TABLE = "entity.metrics_product_analytics"
D = date(2026, 3, 10)


def _event(conn, event_id: int, user_id: int, day: str) -> None:
    conn.execute("insert into raw.product_sessions (session_id, user_id, started_at, duration_seconds, "
                 "platform) values (%s, %s, %s::date + interval '9 hours', 300, 'desktop')",
                 (event_id, user_id, day))
    conn.execute("insert into raw.product_events (event_id, session_id, user_id, occurred_at, event_type, "
                 "feature_id) values (%s, %s, %s, %s::date + interval '9 hours 1 minute', 'view', null)",
                 (event_id, event_id, user_id, day))


@pytest.fixture
def product(conn):
    seed.apply_source_contract(conn)
    conn.execute("insert into raw.customers (customer_id, customer_name, segment, plan, region, created_at) "
                 "values (1, 'Alpha', 'smb', 'starter', 'NA', '2025-01-01')")
    conn.execute("insert into raw.users (user_id, customer_id, created_at, activated_at) "
                 "select u, 1, '2025-01-01', '2025-01-02' from generate_series(1, 3) as u")
    for i in range(9):
        _event(conn, 100 + i, 1, str(date(2026, 3, 1) + timedelta(days=i)))
    _event(conn, 200, 2, "2026-03-05")
    return conn


def _values(conn, metric_date: date) -> dict:
    row = conn.execute(f"select daily_active_users, weekly_active_users, monthly_active_users "
                       f"from {TABLE} where metric_date = %s", (metric_date,)).fetchone()
    return dict(zip(("dau", "wau", "mau"), row, strict=True))


def test_a_late_event_is_republished_and_restated_exactly(product):
    for x in (date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9)):
        pipeline.refresh_domain(product, PA, x, f"daily-{x}")
    assert _values(product, date(2026, 3, 8)) == {"dau": 1, "wau": 2, "mau": 2}
    assert _values(product, date(2026, 3, 9)) == {"dau": 1, "wau": 2, "mau": 2}
    before = {x: _metrics(product, x) for x in (date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9))}
    pipeline.build_unified(product, "fan-in-1")
    seen_at = product.execute("select clock_timestamp()").fetchone()[0]

    _event(product, 300, 3, "2026-03-07")  # lands on D, dated D-3
    dates = pipeline.refresh_states(product, PA, D)
    assert dates == [date(2026, 3, 8), date(2026, 3, 9), D]
    for x in dates:
        pipeline.build_staging(product, PA, x, "daily-2026-03-10")
    pipeline.publish(product, PA, dates, "daily-2026-03-10", pipeline.late_data_reasons(dates, D))

    assert _values(product, date(2026, 3, 8)) == {"dau": 2, "wau": 3, "mau": 3}
    assert _values(product, date(2026, 3, 9)) == {"dau": 1, "wau": 3, "mau": 3}
    assert _values(product, D) == {"dau": 1, "wau": 3, "mau": 3}
    # 03-07 was not touched: its window [01-06, 03-07) ends before the late day
    assert _metrics(product, date(2026, 3, 7)) == before[date(2026, 3, 7)]

    ledger = product.execute(
        "select metric_date, metric_name, old_value, new_value, reason from metrics_ops.restatements "
        "order by 1, 2").fetchall()
    # exactly the values that differ between before and after, nothing for 03-07 or D
    changed = {(x, name) for x in (date(2026, 3, 8), date(2026, 3, 9))
               for name, value in _metrics(product, x).items() if value != before[x][name]}
    assert {(r[0], r[1]) for r in ledger} == changed
    assert {r[0] for r in ledger} == {date(2026, 3, 8), date(2026, 3, 9)}
    dau = [r for r in ledger if r[1] == "daily_active_users"]
    assert [(r[0], r[2], r[3]) for r in dau] == [(date(2026, 3, 8), 1, 2)]
    assert [(r[0], r[2], r[3]) for r in ledger if r[1] == "weekly_active_users"] == [
        (date(2026, 3, 8), 2, 3), (date(2026, 3, 9), 2, 3)]
    assert all(r[4].startswith("late data: state changed before") for r in ledger)

    # what the number said when readers first saw it, and what it says now
    pipeline.build_unified(product, "fan-in-2")
    as_of = "select entity.metric_value_as_of('product', 'daily_active_users', %s, 'all', %s)"
    assert product.execute(as_of, (date(2026, 3, 8), seen_at)).fetchone()[0] == 1
    assert product.execute(as_of, (date(2026, 3, 8), datetime.now(UTC))).fetchone()[0] == 2
    summary = dict(product.execute(
        "select metric_name, restated_values from entity.metrics_restatement_summary "
        "where domain = 'product'").fetchall())
    assert summary["daily_active_users"] == 1 and summary["weekly_active_users"] == 2

    # a rerun with unchanged sources records nothing and changes nothing
    n = len(ledger)
    pipeline.refresh_domain(product, PA, D, "manual__rerun")
    assert product.execute("select count(*) from metrics_ops.restatements").fetchone()[0] == n
    assert _values(product, date(2026, 3, 8)) == {"dau": 2, "wau": 3, "mau": 3}


def _metrics(conn, metric_date: date) -> dict:
    """Every implemented numeric metric of the product row of `metric_date`."""
    names = [m.name for m in PA.unified]
    row = conn.execute(f"select {', '.join(names)} from {TABLE} where metric_date = %s",
                       (metric_date,)).fetchone()
    return dict(zip(names, row, strict=True))


def test_a_backfill_of_history_reads_state_rebuilt_after_the_raw_data_was_fixed(product):
    pipeline.refresh_domain(product, PA, date(2026, 3, 6), "daily")
    assert _values(product, date(2026, 3, 6))["wau"] == 2
    # raw data for 03-02 is fixed long after its state day was built: user 3 was active then
    _event(product, 400, 3, "2026-03-02")
    # a rerun of a historical date with the old rule (state days outside the lookback reused)
    pipeline.refresh_domain(product, PA, date(2026, 3, 6), "manual__1")
    assert _values(product, date(2026, 3, 6))["wau"] == 2  # [03-03, 03-06): the stale day is not read
    fixed_at = datetime.now(UTC)
    pipeline.refresh_domain(product, PA, date(2026, 3, 9), "backfill__1", fresh_after=fixed_at)
    assert _values(product, date(2026, 3, 9))["mau"] == 3  # 03-02 rebuilt: user 3 counted
    # each state day is rebuilt once per backfill: a later date of it reuses the rebuilt days
    built = product.execute("select max(built_at) from metrics_ops.state_days where activity_date = "
                            "'2026-03-02'").fetchone()[0]
    pipeline.refresh_domain(product, PA, date(2026, 3, 8), "backfill__1", fresh_after=fixed_at)
    assert product.execute("select max(built_at) from metrics_ops.state_days where activity_date = "
                           "'2026-03-02'").fetchone()[0] == built


def test_the_daily_dag_republishes_late_data_and_the_lookback_fits_the_window(dagbag, conn):
    today = date.today()
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=today)
    dag = dagbag.get_dag(PA.table)
    assert dag.params["lookback_days"] == 3
    assert dag.params.get_param("lookback_days").schema["maximum"] == PA.state_window_days == 60

    def run(d: date):
        dr = dag.test(logical_date=pendulum.datetime(d.year, d.month, d.day, tz="UTC"))
        assert dr.state == "success"

    yesterday = today - timedelta(days=1)
    run(yesterday)
    dau = conn.execute(f"select daily_active_users from {TABLE} where metric_date = %s",
                       (yesterday,)).fetchone()[0]
    # a brand-new user's event dated two days ago lands today
    conn.execute("insert into raw.users (user_id, customer_id, created_at, activated_at) "
                 "select 9999999, min(customer_id), '2025-01-01', '2025-01-02' from raw.customers")
    _event(conn, 99999999, 9999999, str(today - timedelta(days=2)))
    run(today)
    assert conn.execute(f"select daily_active_users from {TABLE} where metric_date = %s",
                        (yesterday,)).fetchone()[0] == dau + 1
    assert conn.execute("select old_value, new_value, reason like 'late data%%' from "
                        "metrics_ops.restatements where metric_name = 'daily_active_users' "
                        "and metric_date = %s", (yesterday,)).fetchall() == [(dau, dau + 1, True)]


def test_a_republished_day_says_why_it_changed(product):
    x = date(2026, 3, 9)
    pipeline.refresh_domain(product, PA, x, "scheduled__2026-03-09T00:00:00+00:00")
    _event(product, 500, 3, "2026-03-08")  # a late row for D-1, picked up by a backfill
    pipeline.refresh_domain(product, PA, x, "backfill__2026-03-09T00:00:00+00:00")
    # the published definition differs from the one in force now (registry or SQL edited)
    product.execute("update metrics_ops.publish_history set definition_hash = 'older' "
                    "where target = %s", (PA.table,))
    _event(product, 501, 2, "2026-03-08")
    pipeline.refresh_domain(product, PA, x, "manual__2026-03-09T12:00:00+00:00")
    product.execute("insert into raw.users (user_id, customer_id, created_at, activated_at) "
                    "values (4, 1, '2025-01-01', '2025-01-02')")
    _event(product, 502, 4, "2026-03-07")  # a new user in the week: WAU 3 -> 4, DAU unchanged
    pipeline.refresh_domain(product, PA, x, "manual__2026-03-09T13:00:00+00:00")
    reasons = product.execute(
        "select run_id, reason, old_value, new_value from metrics_ops.restatements "
        "where metric_name = 'daily_active_users' order by restatement_id").fetchall()
    assert [(r[1].split(" (")[0], r[2], r[3]) for r in reasons] == [
        ("backfill", 1, 2), ("definition change", 2, 3)]
    assert reasons[1][1] == (f"definition change (registry or SQL older -> "
                             f"{pipeline.definition_hash(PA)})")
    assert product.execute("select reason, old_value, new_value from metrics_ops.restatements "
                           "where metric_name = 'weekly_active_users' order by restatement_id desc "
                           "limit 1").fetchone() == ("manual rerun", 3, 4)


def _run_day(conn, domain, day: date, run_id: str, fresh_after=None) -> list[date]:
    """refresh, build and publish one run of `domain` for `day`; returns the dates it built."""
    dates = pipeline.refresh_states(conn, domain, day, fresh_after=fresh_after)
    for x in dates:
        pipeline.build_staging(conn, domain, x, run_id)
    pipeline.publish(conn, domain, dates, run_id, pipeline.late_data_reasons(dates, day))
    return dates


def test_late_data_in_a_shared_state_reaches_every_domain_that_reads_it(product):
    """Customer success and product both read metrics_state.user_activity_daily. The late event
    of user 3 on 03-07 must be republished by BOTH domains' runs for D, whichever refreshes the
    state first, and the state days are rebuilt once for the two runs (not once per domain)."""
    cs = load_registry()["customer_success"]
    pipeline.ensure_schema(product)
    for x in (date(2026, 3, 8), date(2026, 3, 9)):
        _run_day(product, cs, x, f"scheduled__{x}")
        _run_day(product, PA, x, f"scheduled__{x}")
    mau = f"select monthly_active_users from entity.{cs.table} where metric_date = %s and customer_id = 1"
    assert product.execute(mau, (date(2026, 3, 8),)).fetchone()[0] == 2
    assert _values(product, date(2026, 3, 8))["wau"] == 2

    queued = product.execute("select clock_timestamp()").fetchone()[0]  # both runs of D queued
    _event(product, 300, 3, "2026-03-07")
    assert _run_day(product, cs, D, "scheduled__d", fresh_after=queued) == [
        date(2026, 3, 8), date(2026, 3, 9), D]
    built = product.execute("select array_agg(built_at order by activity_date) from metrics_ops.state_days "
                            "where activity_date >= '2026-03-07'").fetchone()[0]
    assert _run_day(product, PA, D, "scheduled__d", fresh_after=queued) == [
        date(2026, 3, 8), date(2026, 3, 9), D]
    # the product run found the lookback days fresh (built after it was queued): not rebuilt
    assert product.execute("select array_agg(built_at order by activity_date) from metrics_ops.state_days "
                           "where activity_date >= '2026-03-07'").fetchone()[0] == built
    assert product.execute(mau, (date(2026, 3, 8),)).fetchone()[0] == 3
    assert _values(product, date(2026, 3, 8)) == {"dau": 2, "wau": 3, "mau": 3}
    # a later run of either domain finds nothing left to republish
    assert _run_day(product, PA, D, "manual__again") == [D]
    assert _run_day(product, cs, D, "manual__again") == [D]


def _state_rows(conn, day: str) -> list[tuple]:
    """The state rows of one day with their xmin (the transaction that wrote each version)."""
    return conn.execute("select user_id, events, xmin::text from metrics_state.user_activity_daily "
                        "where activity_date = %s order by user_id", (day,)).fetchall()


def test_a_lookback_without_late_data_rewrites_no_state_row(product):
    """The daily run rebuilds the last 3 state days to catch late rows; a day whose rebuilt rows
    equal the stored ones is left in place (no new row versions: no index churn, no dead rows),
    a day that did change is replaced, and only its rows."""
    pipeline.refresh_domain(product, PA, date(2026, 3, 9), "daily-03-09")
    before = {d: _state_rows(product, d) for d in ("2026-03-06", "2026-03-07", "2026-03-08")}
    assert [r[:2] for r in before["2026-03-07"]] == [(1, 1)]
    pipeline.refresh_domain(product, PA, date(2026, 3, 9), "manual__rerun")  # same sources
    assert {d: _state_rows(product, d) for d in before} == before

    _event(product, 300, 3, "2026-03-07")  # a late event
    pipeline.refresh_domain(product, PA, date(2026, 3, 9), "manual__late")
    after = {d: _state_rows(product, d) for d in before}
    assert [r[:2] for r in after["2026-03-07"]] == [(1, 1), (3, 1)]
    assert after["2026-03-07"][0][2] != before["2026-03-07"][0][2]  # the changed day: rewritten
    assert after["2026-03-06"] == before["2026-03-06"] and after["2026-03-08"] == before["2026-03-08"]
    versions = dict(product.execute("select activity_date::text, version from metrics_ops.state_days "
                                    "where state = 'user_activity_daily'").fetchall())
    assert versions["2026-03-07"] > max(versions["2026-03-06"], versions["2026-03-08"])


def test_a_range_build_writes_the_state_day_by_day(product):
    """A window reads whole days: a range build (a backfill, a first run) writes the state in day
    order, so a day's rows share pages with that day only (not one page per user and day)."""
    pipeline.ensure_schema(product)
    pipeline.refresh_states(product, PA, [date(2026, 3, 8), date(2026, 3, 9)])
    physical = [r[0] for r in product.execute(
        "select activity_date from metrics_state.user_activity_daily order by ctid").fetchall()]
    assert len(physical) == 9  # user 1 on 03-01 .. 03-08, user 2 on 03-05
    assert physical == sorted(physical)


def test_a_backfills_state_is_built_in_pieces_and_a_failed_piece_loses_only_its_days(product):
    """A long state refresh (a backfill's: the 60-day windows of 03-08 and 03-09, 61 days) is cut
    into four contiguous pieces, 01-07..01-22, 01-23..02-06, 02-07..02-21 and 02-22..03-08, built
    on two connections, each piece built and recorded in a transaction of its own. When the last
    fails, the days of the three before it stay built and recorded and its own are neither; the
    retry (the same run: the same request time) finds those days fresh and builds the last
    piece's only, each row once."""
    _event(product, 400, 2, "2026-01-20")  # a row in the first piece
    pipeline.ensure_schema(product)
    product.execute("create function pg_temp.refuse() returns trigger language plpgsql as "
                    "$$ begin raise exception 'refused a row of %', new.activity_date; end $$")
    product.execute("create trigger refuse_0305 before insert on metrics_state.user_activity_daily for each row "
                    "when (new.activity_date = '2026-03-05') execute function pg_temp.refuse()")
    asked = datetime.now(UTC)
    dates = [date(2026, 3, 8), date(2026, 3, 9)]
    assert [p[0] for p in pipeline.state_pieces([date(2026, 1, 7) + timedelta(days=i) for i in range(61)])] == [
        date(2026, 1, 7), date(2026, 1, 23), date(2026, 2, 7), date(2026, 2, 22)]
    with pytest.raises(psycopg.errors.RaiseException, match="refused a row of 2026-03-05"):
        pipeline.refresh_state(product, "user_activity_daily", dates, 3, 60, fresh_after=asked)

    def recorded() -> tuple:
        return product.execute("select min(activity_date), max(activity_date), count(*) from metrics_ops.state_days "
                               "where state = 'user_activity_daily'").fetchone()

    def rows() -> list[tuple]:
        return product.execute("select activity_date::text, user_id from metrics_state.user_activity_daily "
                               "order by 1, 2").fetchall()

    assert recorded() == (date(2026, 1, 7), date(2026, 2, 21), 46)
    assert rows() == [("2026-01-20", 2)]
    product.execute("drop trigger refuse_0305 on metrics_state.user_activity_daily")
    again = pipeline.refresh_state(product, "user_activity_daily", dates, 3, 60, fresh_after=asked)
    assert again.rebuilt == [date(2026, 2, 22) + timedelta(days=i) for i in range(15)]
    assert recorded() == (date(2026, 1, 7), date(2026, 3, 8), 61)
    assert rows() == [("2026-01-20", 2)] + [(f"2026-03-0{d}", 1) for d in range(1, 5)] + [
        ("2026-03-05", 1), ("2026-03-05", 2)] + [(f"2026-03-0{d}", 1) for d in range(6, 9)]


def test_a_redefined_state_republishes_nothing_and_never_from_part_of_a_window(product):
    """A state whose definition changed is dropped and rebuilt as runs need it (migrate). The run
    after it rebuilds only its own window: a day built for the first time is not a change, so no
    published date is republished from a window the state no longer fully holds (at SCALE=10
    the benchmark republished 60 days of product metrics with MAU 37,394 instead of 156,147)."""
    _event(product, 500, 3, "2026-01-08")  # in the retention window of X = 03-08 only
    for x in (date(2026, 3, 8), date(2026, 3, 9)):
        pipeline.refresh_domain(product, PA, x, f"daily-{x}")
    published = {x: _metrics(product, x) for x in (date(2026, 3, 8), date(2026, 3, 9))}
    # a deployment changed the state's definition: migrate drops it and forgets its days
    product.execute("delete from metrics_ops.state_definitions where state = 'user_activity_daily'")
    product.execute("delete from metrics_ops.schema_version")
    pipeline.ensure_schema(product)
    assert product.execute("select count(*) from metrics_ops.state_days").fetchone()[0] == 0

    assert pipeline.refresh_states(product, PA, D) == [D]  # [01-09, 03-10) rebuilt, nothing affected
    pipeline.refresh_domain(product, PA, D, "daily-2026-03-10")
    assert {x: _metrics(product, x) for x in published} == published
    assert product.execute("select count(*) from metrics_ops.restatements").fetchone()[0] == 0

    # late data after that: 03-08 is republished, from its whole window (01-07 .. 03-07 rebuilt)
    _event(product, 300, 3, "2026-03-07")
    assert pipeline.refresh_states(product, PA, D, fresh_after=datetime.now(UTC)) == [
        date(2026, 3, 8), date(2026, 3, 9), D]
    assert product.execute("select count(*) from metrics_ops.state_days where state = 'user_activity_daily' "
                           "and activity_date between '2026-01-07' and '2026-03-07'").fetchone()[0] == 60
