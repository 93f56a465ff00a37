"""The range path: one DAG run per domain builds many metric_dates (the `end_date` param: the
state once, one validation, one publication) and leaves exactly the rows that one run per date
leaves, in every table readers see."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pendulum
import psycopg
import pytest

from conftest import ROOT
from metrics_layer import cli, pipeline, seed
from metrics_layer.errors import BuildError
from metrics_layer.registry import load_registry, source_domains
from metrics_layer.runctx import MAX_RANGE_DAYS, metric_dates

TODAY = date.today()
DATES = [TODAY - timedelta(days=i) for i in range(5, -1, -1)]
# six consecutive dates up to today, three at the end of one month and three at the start of the next
_START = TODAY.replace(day=1) if TODAY.day >= 3 else (TODAY.replace(day=1) - timedelta(days=1)).replace(day=1)
ACROSS_A_MONTH_END = [_START + timedelta(days=i) for i in range(-3, 3)]
LAYER = ("entity", "metrics_staging", "metrics_state", "metrics_ops")


def _tables(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "select format('%I.%I', schemaname, tablename) from pg_tables where schemaname = 'entity' "
        "order by 1").fetchall()]


def _checksums(conn) -> dict[str, tuple[int, str]]:
    """Row count and a hash of every row of every table of schema entity."""
    return {t: conn.execute(f"select count(*), md5(coalesce(string_agg(x::text, '|' order by x::text), '')) "
                            f"from {t} as x").fetchone() for t in _tables(conn)}


def test_a_range_run_leaves_exactly_what_one_run_per_date_leaves(conn, tmp_path, monkeypatch):
    """Product analytics' range builds its six dates with its range form (one statement;
    six dates alone would not take it: METRICS_RANGE_FORM=always); the fan-in builds the two
    new months of metrics_api at once, on two connections."""
    DATES = ACROSS_A_MONTH_END  # noqa: N806
    seed.seed(conn, scale=0.05, days=40, seed=7, end_date=TODAY)
    assert cli.run_dates(source_domains(), DATES, tmp_path / "per-date.log", per_date=True) == []
    per_date = _checksums(conn)
    for domain in source_domains():
        assert conn.execute(f"select count(distinct metric_date) from entity.{domain.table}").fetchone()[0] == 6
    assert per_date["entity.metrics_api"][0] > 0 and per_date["entity.metrics_company_overview"][0] == 6
    runs_per_date = conn.execute("select count(distinct run_id) from metrics_ops.publish_history "
                                 "where target = 'metrics_sales'").fetchone()[0]

    for schema in LAYER:
        conn.execute(f"drop schema {schema} cascade")
    monkeypatch.setenv("METRICS_RANGE_FORM", "always")
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    pipeline.log.addHandler(handler)
    monkeypatch.setattr(pipeline.log, "level", logging.INFO)
    product = load_registry()["product"]
    assert pipeline.uses_range_form(product, DATES, pipeline.build_workers())
    try:
        assert cli.run_dates(source_domains(), DATES, tmp_path / "range.log") == []
    finally:
        pipeline.log.removeHandler(handler)
    assert _checksums(conn) == per_date
    # the fan-in built both new months at once, each with the rows of every domain without period
    # totals (the largest first); marketing's (period totals) were written into them after
    at_once = [m.split("metrics_api: ", 1)[1].split(" in ")[0] for m in messages if "connections and attached" in m]
    assert at_once == ["built 2 month(s) of customer_success, sales, company, product on 2 connections "
                       "and attached them"]
    # each new month's rows of those domains were written in the order of metrics_api's unique key
    # (building the key then finds them sorted); marketing's come after them. Every row: one
    # INSERT per domain put a row on an earlier page with room for it now and then (5 of 2,507
    # out of place, enough to make the key's build sort them all again), and written date by
    # date, each date's metrics in the registry's order, 1,061 were
    for month in ("y" + f"{DATES[0]:%Y}m{DATES[0]:%m}", "y" + f"{DATES[-1]:%Y}m{DATES[-1]:%m}"):
        rows, out_of_order = conn.execute(
            "select count(*), count(*) filter (where k < prev) from (select row(domain, metric_name, "
            "metric_date, entity_id) as k, lag(row(domain, metric_name, metric_date, entity_id)) over (order by ctid) "
            f"as prev from entity.metrics_api_{month} where domain <> 'marketing') as x"  # noqa: S608
        ).fetchone()
        assert rows > 1000 and out_of_order == 0, (month, rows, out_of_order)
    # the state of the range's windows was built in pieces on two connections (35 days of
    # user_activity_daily for customer success's 30-day windows, then 30 more for product's 60)
    split = [m.split(", ")[0] for m in messages
             if m.startswith("state user_activity_daily") and " on 2 connections;" in m]
    assert split == [
        f"state user_activity_daily: rebuilt 35 day(s) {DATES[0] - timedelta(days=30)}..{DATES[-1] - timedelta(days=1)}",
        f"state user_activity_daily: rebuilt 30 day(s) {DATES[0] - timedelta(days=60)}..{DATES[0] - timedelta(days=31)}",
    ], messages
    # one run built the six dates of each domain
    assert runs_per_date == 6
    assert conn.execute("select count(distinct run_id), count(*) from metrics_ops.publish_history "
                        "where target = 'metrics_sales'").fetchone() == (1, 6)


def test_a_range_is_built_on_two_connections_at_once(conn):
    """While the first date's build waits for a row another session holds, the five other dates
    are built and committed: by a second connection (one connection would wait on the first).
    A date that cannot be built fails the range with its own message."""
    import threading
    import time

    sales = load_registry()["sales"]
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    pipeline.ensure_schema(conn)
    assert pipeline.refresh_states(conn, sales, DATES) == DATES
    run_id = "backfill__two_connections"
    conn.execute("set lock_timeout = '30s'")  # one connection would wait on the first date this long
    watcher = psycopg.connect(**conn.info.get_parameters(), autocommit=True)  # `conn` is the build's
    blocker = psycopg.connect(**conn.info.get_parameters(), autocommit=False)
    # the build of DATES[0] upserts this key of its bookkeeping: it waits for this transaction
    blocker.execute("insert into metrics_ops.build_log (target, metric_date, stage_id, built_at, state_version) "
                    "values (%s, %s, %s, now(), 0)", (sales.table, DATES[0], pipeline.stage_key(run_id)))
    built: dict = {}
    worker = threading.Thread(target=lambda: built.update(pipeline.build_dates(conn, sales, DATES, run_id, workers=2)))
    worker.start()
    staged = []
    for _ in range(200):  # up to 20 s; the session's lock_timeout is 30 s
        staged = [r[0] for r in watcher.execute(
            "select distinct metric_date from metrics_staging.metrics_sales where stage_id = %s order by 1",
            (pipeline.stage_key(run_id),)).fetchall()]
        if staged == DATES[1:]:
            break
        time.sleep(0.1)
    blocker.rollback()
    blocker.close()
    watcher.close()
    worker.join(60)
    assert staged == DATES[1:]
    assert sorted(built) == DATES and all(n > 0 for n in built.values())
    # each date staged exactly the rows a build of it alone stages
    one = pipeline.build_dates(conn, sales, [DATES[3]], "one_date", workers=2)
    assert one == {DATES[3]: built[DATES[3]]}

    before = date(2000, 1, 3)  # before the seed: no sales rep exists yet
    with pytest.raises(BuildError, match="2000-01-03: the build produced no rows"):
        pipeline.build_dates(conn, sales, [*DATES, before], "with_a_bad_date", workers=2)


def _context(**params):
    return {"params": {"metric_date": None, **params}, "logical_date": pendulum.datetime(2026, 3, 10, tz="UTC")}


def test_the_range_params_are_checked_before_anything_runs(pg_server, conn):
    from airflow.dag_processing.dagbag import DagBag

    assert metric_dates(_context()) == [date(2026, 3, 10)]
    assert metric_dates(_context(metric_date="2026-02-27", end_date="2026-03-01")) == [
        date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)]
    with pytest.raises(Exception, match="end_date=2026-03-01 is before the run's metric_date 2026-03-10"):
        metric_dates(_context(end_date="2026-03-01"))
    with pytest.raises(Exception, match=f"one run builds at most {MAX_RANGE_DAYS}"):
        metric_dates(_context(metric_date="2025-01-01", end_date="2026-03-01"))
    # a real run with a backwards range fails at its first task, saying why, and builds nothing
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    # a DAG of its own: dag.test(run_conf=...) leaves the conf in the in-memory tasks' params
    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("metrics_sales")
    dr = dag.test(run_conf={"metric_date": str(TODAY), "end_date": str(TODAY - timedelta(days=3))})
    assert dr.state == "failed"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["check_sources"] == "failed" and states["publish"] == "upstream_failed"
    assert conn.execute("select to_regclass('entity.metrics_sales')").fetchone()[0] is None


def test_the_range_forms_give_the_per_date_rows_on_a_seeded_quarter(conn):
    """Customer success and product analytics build a quarter of seeded data with their range
    forms (one statement each) and with their per-date forms: the same rows on every date
    (users created, activated and deactivated, devices in service, tickets, subscriptions and
    core features released inside the range, as the seed draws them)."""
    seed.seed(conn, scale=0.05, days=120, seed=11, end_date=TODAY)
    pipeline.ensure_schema(conn)
    dates = [TODAY - timedelta(days=i) for i in range(89, -1, -1)]
    # a core feature released inside the range (after its users' first events): a second core mask
    conn.execute("update raw.features set released_at = %s::date + interval '10 hours' where feature_id = 2",
                 (dates[45],))
    assert conn.execute("select is_core from raw.features where feature_id = 2").fetchone() == (True,)
    for name in ("customer_success", "product"):
        domain = load_registry()[name]
        pipeline.refresh_states(conn, domain, dates)
        assert pipeline.uses_range_form(domain, dates, workers=2)
        run_id = f"range-form-{name}"
        pipeline.build_dates(conn, domain, dates, run_id=run_id)
        cols = ", ".join(domain.built_columns)
        got = conn.execute(f"select {cols} from metrics_staging.{domain.table} where stage_id = %s "  # noqa: S608
                           "order by 1, 2", (pipeline.stage_key(run_id),)).fetchall()
        per_date = pipeline.build_select(domain)
        expected = [row for d in dates for row in conn.execute(
            f"select {cols} from ({per_date}) as q order by 1, 2", {"metric_date": d}).fetchall()]  # noqa: S608
        assert len(got) == len(expected) >= len(dates)
        assert got == expected, name


def test_a_range_is_cut_into_one_contiguous_piece_per_connection():
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(7)]
    assert pipeline.range_pieces(days, 2) == [days[:4], days[4:]]
    assert pipeline.range_pieces(days, 3) == [days[:3], days[3:5], days[5:]]
    assert pipeline.range_pieces(days[:1], 2) == [days[:1]]
    assert pipeline.range_pieces(list(reversed(days)), 1) == [days]


def test_a_range_is_cut_where_its_pieces_cost_the_same():
    """A piece of a range form costs a unit per date and per state day with rows that its 30-day
    windows read. With data since the first date (a backfill from the first day of data), the
    first piece reads no days before it: 90 dates are cut after 53 (53 dates and 52 state days,
    105; 37 dates and the 66 state days of [date 53 - 30, date 89), 103), not at 45 (89 against
    119). With data throughout, the same as by length."""
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(90)]
    from_first = pipeline.range_pieces(days, 2, days, 30)
    assert [len(p) for p in from_first] == [53, 37] and from_first[0] + from_first[1] == days
    before = [days[0] - timedelta(days=i) for i in range(1, 31)]
    assert pipeline.range_pieces(days, 2, before + days, 30) == pipeline.range_pieces(days, 2)
    assert [len(p) for p in pipeline.range_pieces(days, 3, before + days, 30)] == [30, 30, 30]
    assert pipeline.range_pieces(days[:1], 2, days, 30) == [days[:1]]
