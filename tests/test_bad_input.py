"""Bad input gets a clear message, never a silent wrong number, and never touches published data."""

from __future__ import annotations

from datetime import date

import pytest

from helpers import load_fixture, table_dump
from metrics_layer import pipeline, runner, validation
from metrics_layer.errors import BuildError, SourceContractError, ValidationFailed
from metrics_layer.registry import load_registry

CS = load_registry()["customer_success"]
D = date(2026, 3, 10)


@pytest.fixture
def golden(conn):
    load_fixture(conn, "customer_success_golden.sql")
    pipeline.ensure_schema(conn)
    return conn


def test_missing_and_empty_sources_are_named(golden):
    golden.execute("drop table raw.devices cascade")
    golden.execute("drop table raw.device_telemetry")
    with pytest.raises(SourceContractError, match=r"missing: raw\.device_telemetry, raw\.devices\. "
                                                  r"The source contract is in docs/sources\.md"):
        pipeline.check_sources(golden, CS)
    golden.execute("create table raw.devices (device_id bigint, customer_id bigint, device_type text, "
                   "registered_at timestamptz, decommissioned_at timestamptz)")
    golden.execute("create table raw.device_telemetry (device_id bigint, reading_date date, "
                   "health_score numeric, volume_processed bigint)")
    with pytest.raises(SourceContractError, match=r"empty: raw\.devices, raw\.device_telemetry"):
        pipeline.check_sources(golden, CS)


def test_duplicated_customers_fail_the_build_with_the_key(golden):
    golden.execute("alter table raw.customers drop constraint customers_pkey cascade")
    golden.execute("insert into raw.customers select * from raw.customers where customer_id = 2")
    pipeline.refresh_state(golden, "user_activity_daily", D)
    with pytest.raises(BuildError, match=r"duplicate keys \(metric_date, customer_id\): "
                                         r"Key \(metric_date, customer_id\)=\(2026-03-10, 2\)"):
        pipeline.build_staging(golden, CS, D)


def test_an_empty_day_is_an_error_not_an_empty_table(golden):
    # nobody is a customer yet on 2020-01-01
    with pytest.raises(BuildError, match="2020-01-01: the build produced no rows"):
        pipeline.build_staging(golden, CS, date(2020, 1, 1))


def test_a_failed_validation_leaves_the_published_day_in_place(golden):
    pipeline.refresh_domain(golden, CS, D)
    published = table_dump(golden, "entity.metrics_customer_success")
    golden.execute("alter table raw.subscriptions drop constraint subscriptions_mrr_check")
    golden.execute("insert into raw.subscriptions values (99, 2, 'refund', -500, '2026-03-01', null)")
    pipeline.build_staging(golden, CS, D)
    summary = validation.validate_day(CS, D)
    assert not summary.success
    assert [(f.expectation, f.column) for f in summary.failures] == [
        ("expect_column_values_to_be_between", "current_mrr")]
    assert summary.failures[0].detail == (
        "[error] current_mrr_in_range; observed 1 of 3 rows unexpected; values -400.50; "
        "expected current_mrr: min_value=0.0; e.g. Beta O'Neil & Søn (customer_id 2)")
    assert table_dump(golden, "entity.metrics_customer_success") == published


def test_the_build_step_checks_what_it_built_on_its_connection_and_a_retry_builds_again(golden, monkeypatch):
    """The DAG's build_and_validate task: the slices are validated on the connection that built
    them (one backend: no second connection's start-up and catalog loading, bench/ P5); a
    blocking failure is recorded before the task fails; after the source is fixed, running the
    task again builds before it checks, so the fixed day passes (a separate validate task,
    cleared alone, checked the old slice again)."""
    pipeline.refresh_state(golden, "user_activity_daily", D)
    golden.execute("alter table raw.subscriptions drop constraint subscriptions_mrr_check")
    golden.execute("insert into raw.subscriptions values (99, 2, 'refund', -500, '2026-03-01', null)")
    opened = []
    real_connect = pipeline.connect
    monkeypatch.setattr(pipeline, "connect", lambda *a, **k: opened.append(a) or real_connect(*a, **k))

    with pytest.raises(ValidationFailed, match=r"metrics_customer_success 2026-03-10: 1 of \d+ checks failed"
                                               r"(.|\n)*current_mrr_in_range; observed 1 of 3 rows unexpected"):
        runner.build_step(CS, [D], "manual__try1")
    assert len(opened) == 1
    failed = golden.execute(
        "select check_name from metrics_ops.check_results where run_id = 'manual__try1' "
        "and metric_date = %s and not success", (D,)).fetchall()
    assert failed == [("current_mrr_in_range",)]
    assert golden.execute("select success from metrics_ops.validation_log where run_id = 'manual__try1' "
                          "and metric_date = %s", (D,)).fetchall() == [(False,)]

    golden.execute("delete from raw.subscriptions where subscription_id = 99")
    assert runner.build_step(CS, [D], "manual__try1") == []
    assert golden.execute("select success from metrics_ops.validation_log where run_id = 'manual__try1' "
                          "and metric_date = %s", (D,)).fetchall() == [(True,)]
    assert pipeline.publish(golden, CS, [D], "manual__try1") == 3
    assert golden.execute("select min(current_mrr) from entity.metrics_customer_success "
                          "where metric_date = %s", (D,)).fetchone()[0] >= 0


def test_negative_values_break_the_source_contract_where_it_is_enforced(golden):
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation, match="subscriptions_mrr_check"):
        golden.execute("insert into raw.subscriptions values (98, 2, 'x', -1, '2026-03-01', null)")


def test_a_day_left_in_staging_does_not_block_other_days(golden):
    # 03-09 fails validation (say) and stays staged; 03-10 still builds and publishes
    pipeline.refresh_state(golden, "user_activity_daily", D)
    pipeline.build_staging(golden, CS, date(2026, 3, 9))
    assert pipeline.build_staging(golden, CS, D) == 3
    assert pipeline.publish(golden, CS, D) == 3
    staged = golden.execute("select distinct metric_date from metrics_staging.metrics_customer_success")
    assert staged.fetchall() == [(date(2026, 3, 9),)]


def test_the_fan_in_skips_a_domain_whose_table_was_never_built(golden):
    pipeline.refresh_domain(golden, CS, D)
    others = [d.table for d in load_registry().values() if d.name != "customer_success"]
    for table in others:
        golden.execute(f"drop table entity.{table}")
    rows = sum(pipeline.build_unified(golden).values())
    assert rows == golden.execute("select count(*) from entity.metrics_unified_domains").fetchone()[0] > 0


def test_a_day_missing_an_active_customer_fails_the_row_count_check(golden):
    pipeline.stage(golden, CS, D)
    golden.execute("delete from metrics_staging.metrics_customer_success where customer_id = 5")
    summary = validation.validate_day(CS, D)
    assert [f.expectation for f in summary.failures] == ["unexpected_rows_expectation"]
    assert summary.failures[0].detail == (
        "[error] one_row_per_active_customer; observed 1 offending row(s); expected one row per "
        "customer active as of 00:00 UTC on the metric_date, no more, no fewer; "
        "e.g. metric_date=2026-03-10, row_count=2, active_customers=3")


def test_a_ranges_checks_are_shared_by_two_connections_and_every_failed_date_is_named(golden, monkeypatch):
    """The build step of a range checks its dates on the build connection and one more (the
    SQL engine: a statement a date); a refund that makes current MRR negative from 03-01 fails
    every date of 03-07..03-10: all four are recorded and named, in date order."""
    dates = [date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9), D]
    pipeline.refresh_states(golden, CS, dates)
    golden.execute("alter table raw.subscriptions drop constraint subscriptions_mrr_check")
    golden.execute("insert into raw.subscriptions values (99, 2, 'refund', -500, '2026-03-01', null)")
    siblings = []
    real_sibling = pipeline._sibling
    monkeypatch.setattr(pipeline, "_sibling", lambda conn: siblings.append(1) or real_sibling(conn))
    monkeypatch.setenv("METRICS_RANGE_FORM", "never")  # per-date builds: one sibling for them
    with pytest.raises(ValidationFailed) as failed:
        runner.build_step(CS, dates, "backfill__range")
    named = [line.split(": ", 1)[0] for line in str(failed.value).splitlines() if ": 1 of " in line]
    assert named == [f"metrics_customer_success {d}" for d in dates]
    assert len(siblings) == 2  # one for the builds, one for the checks
    assert golden.execute("select metric_date, success from metrics_ops.validation_log "
                          "where run_id = 'backfill__range' order by 1").fetchall() == [(d, False) for d in dates]
