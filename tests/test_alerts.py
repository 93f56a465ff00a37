"""Alerts: one Slack digest per failing run, warnings after publishing, "resolved" once, dedup,
routing by registry, and delivery through a Slack that rate-limits, errors, hangs or is gone.
Everything against a real local HTTP receiver (tests/conftest.py SlackReceiver), the embedded
PostgreSQL and real DAG runs (dag.test)."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from datetime import date, timedelta
from pathlib import Path

import pendulum
import pytest
import yaml

from conftest import ROOT, SlackReceiver
from metrics_layer import alerts, pipeline, seed
from metrics_layer.dates import utc_today
from metrics_layer.registry import load_domain, load_registry

TODAY = utc_today()
YESTERDAY = TODAY - timedelta(days=1)
# distinctive secrets: any trace of them in a log line or a message is a leak
SECRET = "T0ALRT/B0ALRT/s3cretW3bh00kPath"
TOKEN = "xoxb-0000-s3cretWebApiT0ken"
CS = "metrics_customer_success"
MKT = "metrics_marketing"


def run(dagbag, dag_id: str, d: date = TODAY):
    return dagbag.get_dag(dag_id).test(logical_date=pendulum.datetime(d.year, d.month, d.day, tz="UTC"))


def states(dr) -> dict:
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def alert_rows(conn, dag_id: str) -> list[dict]:
    cur = conn.execute("select * from metrics_ops.alert_log where dag_id = %s order by alert_id", (dag_id,))
    cols = [c.name for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def published(conn, table: str, d: date) -> int:
    return conn.execute(f"select count(*) from entity.{table} where metric_date = %s", (d,)).fetchone()[0]


def section_texts(body: dict) -> str:
    """Every text of a message's blocks, in order, one per line."""
    out = []
    for b in body.get("blocks", []):
        if "text" in b:
            out.append(b["text"]["text"])
        out += [f["text"] for f in b.get("fields", [])]
        out += [e["text"] for e in b.get("elements", [])]
    return "\n".join(out)


def assert_no_secret(*texts) -> None:
    for text in texts:
        for secret in (SECRET, TOKEN, "s3cret"):
            assert secret not in text


@pytest.fixture
def hook(pg_server):
    """The `slack_alerts` webhook connection, pointing at a local receiver, with SECRET as its
    token (the path after /services/)."""
    r = SlackReceiver()
    r.thread.start()
    os.environ["AIRFLOW_CONN_SLACK_ALERTS"] = r.webhook_connection(SECRET)
    yield r
    os.environ.pop("AIRFLOW_CONN_SLACK_ALERTS", None)
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def ops(conn):
    """A migrated warehouse (metrics_ops.check_results and alert_log), no source data."""
    pipeline.migrate(conn)
    return conn


@pytest.fixture
def seeded(conn):
    seed.seed(conn, scale=0.05, days=35, seed=7, end_date=TODAY)
    return conn


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


# ---------------------------------------------------------------------------- delivery

TROUBLE = {
    # name: (answers, delivered, attempts, min seconds, max seconds)
    "429 then ok": ([(429, {"Retry-After": "1"}, 0)], True, 2, 1.0, 4),
    "429 longer than the cap": ([(429, {"Retry-After": "3600"}, 0)], False, 1, 0, 2),
    "500, 502, then ok": ([(500, {}, 0), (502, {}, 0)], True, 3, 0.5, 6),
    "503 every time": ([(503, {}, 0)] * 3, False, 3, 0.5, 6),
    "timeout every time": ([(200, {}, 3)] * 3, False, 3, 3.0, 9),
}


@pytest.mark.parametrize("name", list(TROUBLE))
def test_slack_trouble_is_retried_bounded_and_never_leaks_the_secret(name, hook, monkeypatch,
                                                                      caplog, capfd):
    answers, delivered, attempts, low, high = TROUBLE[name]
    monkeypatch.setenv("METRICS_ALERT_TIMEOUT", "1")
    hook.answers = list(answers)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    assert alerts.send_slack("the alert", blocks=[{"type": "section", "text": {
        "type": "mrkdwn", "text": "the alert"}}]) is delivered
    took = time.monotonic() - started
    assert len(hook.attempts) == attempts
    assert low <= took <= high, f"{name}: {took:.1f}s"
    assert len(hook.posts) == (1 if delivered else 0)
    assert all(a["path"] == f"/services/{SECRET}" for a in hook.attempts)
    if name == "429 then ok":  # Retry-After honoured between the two attempts
        assert hook.attempts[1]["at"] - hook.attempts[0]["at"] >= 1.0
    if not delivered:
        assert "could not post the alert to Slack connection 'slack_alerts'" in caplog.text
        assert "The alert:\nthe alert" in caplog.text  # the content is not lost
    if name == "429 longer than the cap":
        assert "Retry-After 3600s, more than the 10s this alert may wait" in caplog.text
    out, err = capfd.readouterr()
    assert_no_secret(caplog.text, out, err, *(json.dumps(a["body"]) for a in hook.attempts))


def test_a_dead_slack_is_given_up_on_within_seconds(pg_server, monkeypatch, caplog, capfd):
    port = _dead_port()
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{port}/services", "password": SECRET}))
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    assert alerts.send_slack("the alert") is False
    took = time.monotonic() - started
    # 3 attempts, backoff 0.5 s and 1 s (+ jitter up to 1 s each)
    assert 1.5 <= took <= 6, took
    assert caplog.text.count("Failed to send a request to Slack API server") == 3
    assert "Going to retry the same request: POST ***" in caplog.text  # slack_sdk's line, redacted
    assert "Connection refused" in caplog.text
    out, err = capfd.readouterr()
    assert_no_secret(caplog.text, out, err)


def test_an_error_quoting_the_webhook_is_not_forwarded(hook, caplog):
    url = f"http://127.0.0.1:{hook.port}/services/{SECRET}"
    caplog.set_level(logging.DEBUG)
    assert alerts.send_slack(f"urlopen failed for {url}", blocks=[{"type": "section", "text": {
        "type": "mrkdwn", "text": f"token {SECRET}"}}]) is True
    (post,) = hook.posts
    assert post["body"] == {"text": "urlopen failed for ***", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "token ***"}}]}
    assert_no_secret(caplog.text)

def test_without_a_slack_connection_the_alert_is_logged(pg_server, caplog):
    with caplog.at_level(logging.WARNING):
        assert alerts.send_slack("hello", "no_such_slack") is False
    assert "Slack connection 'no_such_slack' is not configured; alert not sent:\nhello" in caplog.text


# ---------------------------------------------------------------------------- content

def _check(n: int, **kw) -> alerts.FailedCheck:
    base = {"metric_date": TODAY, "check_kind": "expectation", "check_name": f"check_{n}",
            "target": CS, "metric": "current_mrr", "entity": None, "severity": "error",
            "observed": f"{n} of 47 rows unexpected", "expected": "min_value=0"}
    return alerts.FailedCheck(**{**base, **kw})


def test_a_digest_names_checks_entities_and_stays_within_slack_limits(monkeypatch):
    monkeypatch.setenv("METRICS_RUNBOOK_URL", "https://git.example.com/metrics/blob/main/docs/runbook.md")
    checks = [_check(1, entity="Initech Foods 1, Acme <Labs>", observed="values -45644.75")]
    checks += [_check(i, check_kind="anomaly", severity="warn") for i in range(2, 13)]
    route = alerts.route_for(CS)
    d = alerts.Digest(dag_id=CS, run_id="manual__x", severity="error", section="check-failed",
                      route=route, metric_date=TODAY, task_id="build_and_validate", try_number=1,
                      error="ValidationFailed: 1 check failed", checks=checks,
                      log_url="http://airflow.example.com/dags/x/runs/y/tasks/build_and_validate?try_number=1",
                      dates=[TODAY])
    blocks, text = d.blocks(), d.text()
    body = json.dumps({"text": text, "blocks": blocks})
    assert len(blocks) <= 50 and len(body) < 12_000
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "emoji": True, "text":
                         f":red_circle: {CS} failed: metric_date {TODAY}"}}
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields[:4] == [f"*DAG*\n`{CS}`", f"*metric_date*\n{TODAY}", "*Severity*\nerror",
                          "*Owner*\n@cs-analytics"]
    every = section_texts({"blocks": blocks})
    # the first check: observed vs expected, entities by name (escaped for Slack), its runbook
    assert (f"[error] `check_1` (expectation, {TODAY}) on `{CS}.current_mrr`: observed values "
            "-45644.75, expected min_value=0; entities: Initech Foods 1, Acme &lt;Labs&gt;") in every
    assert "<https://git.example.com/metrics/blob/main/docs/runbook.md#check-failed|Runbook: Check failed>" in every
    assert "<https://git.example.com/metrics/blob/main/docs/runbook.md#anomaly|Runbook: Anomaly>" in every
    # 8 checks shown, the other 4 counted with where to find them
    assert every.count("` (expectation, ") + every.count("` (anomaly, ") == alerts.MAX_CHECKS_SHOWN
    assert "... and 4 more: `select * from entity.metrics_check_results where run_id = 'manual__x'`" in every
    assert "<http://airflow.example.com/dags/x/runs/y/tasks/build_and_validate?try_number=1|Task log>" in every
    assert (f"`airflow dags trigger {CS} --conf '{{\"metric_date\": \"{TODAY}\"}}'`; locally "
            f"`make run DATE={TODAY}`") in every
    assert "Published data: unchanged; readers still see the last good day." in every
    # the plain-text fallback carries the same facts
    assert text.startswith(f":red_circle: *{CS}* failed for metric_date *{TODAY}*\n"
                           "Task `build_and_validate` (try 1), run `manual__x`\nSeverity: error; owner @cs-analytics")
    assert "  ... and 4 more in metrics_ops.check_results" in text


def test_every_alert_links_a_runbook_section_that_exists():
    """GitHub's heading anchors of docs/runbook.md cover every section an alert can link, and
    the runbook links the operations guide instead of repeating it."""
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = set()
    for heading in re.findall(r"^#{2,3} (.+)$", runbook, flags=re.M):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    assert set(alerts.RUNBOOK_SECTIONS) <= anchors, set(alerts.RUNBOOK_SECTIONS) - anchors
    for section in alerts.RUNBOOK_SECTIONS:
        assert alerts.runbook_url(section) == f"docs/runbook.md#{section}"
    assert "operations.md" in runbook
    for needle in ("metrics_ops.check_results", "entity.metrics_check_results", "metrics_ops.publish_log",
                   "airflow dags trigger", "make run DATE="):
        assert needle in runbook, needle


def _raised(exc: BaseException, wrap: bool = True) -> BaseException:
    """`exc` as the failure callback sees it: raised, and (as factory._task_errors does for a
    permanent error) wrapped in AirflowFailException."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        try:
            raise exc
        except BaseException as inner:
            if not wrap:
                raise
            raise AirflowFailException(str(inner)) from inner
    except BaseException as outer:  # noqa: BLE001 - returned, as the callback receives it
        return outer


def test_each_kind_of_failure_links_its_runbook_section(conn):
    import psycopg

    from metrics_layer import errors

    def db_error(sql: str) -> BaseException:
        try:
            conn.execute(sql)
        except psycopg.Error as e:
            return e
        raise AssertionError(sql)

    error_check = _check(1)
    anomaly = _check(2, check_kind="anomaly")
    source = _check(3, check_kind="source", target="raw.subscriptions")
    cases = [
        (errors.ValidationFailed("2 checks failed"), CS, [error_check], "check-failed"),
        (errors.ValidationFailed("1 check failed"), CS, [anomaly], "anomaly"),
        (errors.ValidationFailed("1 check failed"), CS, [], "check-failed"),
        (errors.SourceCheckFailed("bad rows"), CS, [source], "source-check"),
        (errors.SourceContractError("source table(s) missing: raw.users"), CS, [], "missing-or-empty-source"),
        (errors.BuildError("no rows"), CS, [], "permanent-error"),
        (db_error("select * from no_such_table"), CS, [], "permanent-error"),
        (db_error("selec 1"), CS, [], "permanent-error"),
        (db_error("set statement_timeout = 50; select pg_sleep(1)"), CS, [], "transient-error"),
        (errors.WarehouseBusy("lock held by pid 42"), CS, [], "transient-error"),
        (errors.ValidationFailed("overview"), "metrics_unified", [error_check], "fan-in"),
    ]
    conn.execute("reset statement_timeout")
    got = [alerts.failure_section(_raised(exc, wrap=not errors.is_transient(exc)), dag, checks)
           for exc, dag, checks, _ in cases]
    assert got == [c[3] for c in cases]
    assert alerts.failure_section(None, CS, []) == "transient-error"  # killed: nothing raised


def test_rerun_commands():
    assert alerts.rerun_commands(CS, [date(2026, 11, 25)]) == [
        "airflow dags trigger metrics_customer_success --conf '{\"metric_date\": \"2026-11-25\"}'",
        "make run DATE=2026-11-25"]
    assert alerts.rerun_commands(CS, [date(2026, 11, 25), date(2026, 11, 23), None])[-1] == \
        "make run DATE=2026-11-23 END=2026-11-25"
    assert alerts.rerun_commands("metrics_unified", [date(2026, 11, 25), date(2026, 11, 24)]) == [
        "airflow dags trigger metrics_unified --conf '{\"metric_dates\": [\"2026-11-24\", \"2026-11-25\"]}'"]
    # a range run (more dates than are worth listing): one trigger rebuilds the range again
    month = [date(2026, 10, 1) + timedelta(days=i) for i in range(31)]
    assert alerts.rerun_commands(CS, month) == [
        "airflow dags trigger metrics_customer_success --conf '{\"metric_date\": \"2026-10-01\", "
        "\"end_date\": \"2026-10-31\"}'", "make run DATE=2026-10-01 END=2026-10-31"]


# ---------------------------------------------------------------------------- routing

def test_the_registry_routes_each_domain_and_the_fan_in_to_the_company_domain():
    reg = load_registry()
    for domain in reg.values():
        route = alerts.route_for(domain.table)
        assert route.conn_id == domain.alerting.slack_conn_id == "slack_alerts"
        assert route.mention == domain.alerting.mention
    assert alerts.route_for(CS).mention == "@cs-analytics"
    company = next(d for d in reg.values() if d.derived)
    assert alerts.route_for("metrics_unified") == alerts.Route(
        conn_id="slack_alerts", mention=company.alerting.mention, channel=None, domain=company.name)
    assert alerts.route_for("some_other_dag") == alerts.Route(conn_id="slack_alerts")


def _domain_routed_to(tmp_path: Path, source: str, alerts_cfg: dict):
    raw = yaml.safe_load((ROOT / "include" / "registry" / source).read_text())
    raw["alerts"] = alerts_cfg
    path = tmp_path / source
    path.write_text(yaml.safe_dump(raw))
    return load_domain(path)


def _insert_results(conn, dag_id: str, run_id: str, domain: str, rows: list[dict]) -> None:
    for r in rows:
        r = {"metric_date": TODAY, "check_kind": "expectation", "target": dag_id, "metric": None,
             "entity": None, "severity": "warn", "success": False, "observed": None,
             "expected": None, **r}
        conn.execute(
            "insert into metrics_ops.check_results (run_id, dag_id, domain, metric_date, check_kind, "
            "check_name, target, metric, entity, severity, success, observed, expected) values "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (run_id, dag_id, domain, r["metric_date"], r["check_kind"], r["check_name"], r["target"],
             r["metric"], r["entity"], r["severity"], r["success"], r["observed"], r["expected"]))


def test_a_domain_with_its_own_web_api_connection_and_channel(ops, tmp_path, monkeypatch,
                                                              caplog, capfd):
    """sales routed to a Slack Web API connection (`slack`) and a channel: chat.postMessage with
    the bot token, the owner's group mentioned; the default webhook receives nothing."""
    api, default = SlackReceiver(), SlackReceiver()
    for r in (api, default):
        r.thread.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_SALES_API", api.web_api_connection(TOKEN))
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", default.webhook_connection(SECRET))
        sales = _domain_routed_to(tmp_path, "sales.yaml", {
            "mention": "<!subteam^S0SALES>", "slack_conn_id": "slack_sales_api", "channel": "#sales-metrics"})
        _insert_results(ops, "metrics_sales", "run-1", "sales", [
            {"check_name": "win_rate_in_range", "metric": "win_rate", "observed": "1.2",
             "expected": "between 0 and 1", "entity": "Dana Rep (rep 7)"}])
        caplog.set_level(logging.DEBUG)
        done = alerts.after_publish(sales, [TODAY], "run-1", "metrics_sales")
        assert done == {"warning": "sent", "resolved": []}
        assert default.attempts == []
        (post,) = api.posts
        assert post["path"] == "/api/chat.postMessage"
        assert post["authorization"] == f"Bearer {TOKEN}"
        assert post["body"]["channel"] == "#sales-metrics"
        assert post["body"]["text"].startswith(
            f":large_yellow_circle: *metrics_sales* published metric_date *{TODAY}* with 1 warning(s)")
        assert "owner <!subteam^S0SALES>" in post["body"]["text"]
        assert "*Owner*\n<!subteam^S0SALES>" in section_texts(post["body"])
        assert "entities: Dana Rep (rep 7)" in section_texts(post["body"])
        out, err = capfd.readouterr()
        assert_no_secret(caplog.text, out, err)
    finally:
        for r in (api, default):
            r.server.shutdown()
            r.server.server_close()


def test_a_web_api_connection_without_a_channel_is_logged(ops, tmp_path, monkeypatch, caplog):
    api = SlackReceiver()
    api.thread.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_SALES_API", api.web_api_connection(TOKEN))
        sales = _domain_routed_to(tmp_path, "sales.yaml", {"slack_conn_id": "slack_sales_api"})
        _insert_results(ops, "metrics_sales", "run-1", "sales", [{"check_name": "win_rate_in_range"}])
        assert alerts.after_publish(sales, [TODAY], "run-1", "metrics_sales")["warning"] == "failed"
        assert api.attempts == []
        assert "is a Web API connection but the registry names no `alerts.channel`" in caplog.text
        (row,) = alert_rows(ops, "metrics_sales")
        assert row["delivered"] is False
        # not delivered, so not deduplicated: once the channel is configured it goes out
        sales = _domain_routed_to(tmp_path, "sales.yaml", {"slack_conn_id": "slack_sales_api",
                                                           "channel": "C0SALES"})
        _insert_results(ops, "metrics_sales", "run-2", "sales", [{"check_name": "win_rate_in_range"}])
        assert alerts.after_publish(sales, [TODAY], "run-2", "metrics_sales")["warning"] == "sent"
        assert [p["body"]["channel"] for p in api.posts] == ["C0SALES"]
    finally:
        api.server.shutdown()
        api.server.server_close()



def test_the_same_warning_is_not_repeated_within_the_window_and_is_after_it(ops, hook, monkeypatch):
    """Dedup window (METRICS_ALERT_DEDUP_HOURS): the next run of the date with the same
    warning is silent and counted; once the window has passed it is announced again (the
    same alert_log row, last_sent_at moved)."""
    sales = load_registry()["sales"]
    for run_id in ("run-1", "run-2", "run-3"):
        _insert_results(ops, "metrics_sales", run_id, "sales", [
            {"check_name": "win_rate_in_range", "observed": "1.2", "expected": "between 0 and 1"}])
    assert alerts.after_publish(sales, [TODAY], "run-1", "metrics_sales")["warning"] == "sent"
    assert alerts.after_publish(sales, [TODAY], "run-2", "metrics_sales")["warning"] == "suppressed"
    (row,) = alert_rows(ops, "metrics_sales")
    assert (row["suppressed"], row["run_id"]) == (1, "run-1")
    monkeypatch.setenv("METRICS_ALERT_DEDUP_HOURS", "0")
    assert alerts.after_publish(sales, [TODAY], "run-3", "metrics_sales")["warning"] == "sent"
    (again,) = alert_rows(ops, "metrics_sales")
    assert again["run_id"] == "run-3" and again["last_sent_at"] > row["last_sent_at"]
    assert [p["body"]["text"].splitlines()[0] for p in hook.posts] == [
        f":large_yellow_circle: *metrics_sales* published metric_date *{TODAY}* with 1 warning(s)"] * 2

# ---------------------------------------------------------------------------- real DAG runs

def _break_mrr(conn) -> int:
    """Bad input a real warehouse lets through: a credit note loaded as negative MRR."""
    customer = conn.execute("select min(customer_id) from raw.customers where churned_at is null").fetchone()[0]
    conn.execute("alter table raw.subscriptions drop constraint if exists subscriptions_mrr_check")
    conn.execute("insert into raw.subscriptions values (999999, %s, 'credit', -50000, %s, null)",
                 (customer, YESTERDAY - timedelta(days=3)))
    return customer


def test_one_digest_per_failure_none_on_rerun_and_resolved_once(dagbag, seeded, hook, caplog, capfd):
    """A tier-1 error (a negative MRR row, caught by the source checks): the run fails, nothing
    is published, ONE digest; rerunning the broken date sends nothing new; once fixed, the
    publication announces the recovery once; later runs are silent."""
    caplog.set_level(logging.DEBUG)
    customer = _break_mrr(seeded)
    dr = run(dagbag, CS)
    assert dr.state == "failed"
    assert states(dr)["check_sources"] == "failed" and states(dr)["publish"] == "upstream_failed"
    assert published(seeded, CS, TODAY) == 0
    assert len(hook.posts) == 1
    body = hook.posts[0]["body"]
    assert hook.posts[0]["path"] == f"/services/{SECRET}"
    text, blocks = body["text"], section_texts(body)
    assert text.startswith(f":red_circle: *{CS}* failed for metric_date *{TODAY}*\n"
                           "Task `check_sources` (try 1), run `manual__")
    assert "Severity: error; owner @cs-analytics" in text
    entity = f"subscription 999999 of customer {customer}"
    assert f"[error] `subscriptions_mrr_non_negative` (source, {TODAY}) on `raw.subscriptions`" in text
    assert f"entities: {entity}" in text and f"entities: {entity}" in blocks
    assert "Runbook: docs/runbook.md#source-check" in text
    assert "Runbook: Check failed" not in blocks and "Runbook: Source check: `docs/runbook.md#source-check`" in blocks
    assert f"airflow dags trigger {CS} --conf '{{\"metric_date\": \"{TODAY}\"}}'" in blocks
    assert f"make run DATE={TODAY}" in blocks
    assert f"<http://localhost:8080/dags/{CS}/runs/" in blocks and "/tasks/check_sources?try_number=1|Task log>" in blocks
    assert body["blocks"][0]["text"]["text"] == f":red_circle: {CS} failed: metric_date {TODAY}"
    (row,) = alert_rows(seeded, CS)
    assert (row["metric_date"], row["severity"], row["kind"], row["task_id"], row["delivered"],
            row["suppressed"], row["resolved_at"]) == (TODAY, "error", "source-check", "check_sources",
                                                       True, 0, None)
    assert row["checks"] == [{"check": "subscriptions_mrr_non_negative", "kind": "source",
                              "severity": "error", "target": "raw.subscriptions", "metric": None}]

    # a rerun of the same broken date: the same failure, not announced again
    assert run(dagbag, CS).state == "failed"
    assert len(hook.posts) == 1
    (row,) = alert_rows(seeded, CS)
    assert row["suppressed"] == 1

    # fixed: the date publishes and the recovery is announced once
    seeded.execute("delete from raw.subscriptions where subscription_id = 999999")
    dr = run(dagbag, CS)
    assert dr.state == "success" and published(seeded, CS, TODAY) > 0
    assert len(hook.posts) == 2
    resolved = hook.posts[1]["body"]
    assert resolved["text"].startswith(f":large_green_circle: *{CS}* resolved for metric_date *{TODAY}*\n"
                                       f"Published by run `{dr.run_id}` with its checks passing")
    assert "error (Source check) alerted" in resolved["text"] and "subscriptions_mrr_non_negative" in resolved["text"]
    assert "Runbook: docs/runbook.md#resolved" in resolved["text"]
    (row,) = alert_rows(seeded, CS)
    assert row["resolved_at"] is not None and row["resolved_run_id"] == dr.run_id

    # and never again
    assert run(dagbag, CS).state == "success"
    assert len(hook.posts) == 2
    out, err = capfd.readouterr()
    assert_no_secret(caplog.text, out, err, *(json.dumps(p["body"]) for p in hook.posts))


def test_a_warning_alerts_once_publishes_and_its_recovery_is_announced(dagbag, seeded, hook):
    """An ad platform nobody registered (a warn check): the day publishes, one warning digest;
    the next run of the date with the same warning is silent; registered, it is resolved."""
    campaign = seeded.execute("select min(campaign_id) from raw.ad_campaigns where platform is not null").fetchone()[0]
    platform = seeded.execute("select platform from raw.ad_campaigns where campaign_id = %s", (campaign,)).fetchone()[0]
    seeded.execute("update raw.ad_campaigns set platform = 'tiktok_ads' where campaign_id = %s", (campaign,))
    seeded.execute("update raw.ad_spend_daily set platform = 'tiktok_ads' where campaign_id = %s", (campaign,))
    dr = run(dagbag, MKT)
    assert dr.state == "success" and published(seeded, MKT, TODAY) == 1
    assert len(hook.posts) == 1
    text = hook.posts[0]["body"]["text"]
    assert text.startswith(f":large_yellow_circle: *{MKT}* published metric_date *{TODAY}* with 1 warning(s)\n"
                           "Task `publish` (try 1)")
    assert "Severity: warn; owner @marketing-analytics" in text
    assert f"[warn] `other_platforms_spend_is_zero` (expectation, {TODAY}) on `{MKT}.other_platforms_spend`" in text
    assert "Published: yes (warnings do not block)" in text
    assert "Runbook: docs/runbook.md#warning" in text
    assert "clear the failed task" not in text

    assert run(dagbag, MKT).state == "success"
    assert len(hook.posts) == 1  # the same warning for the same date: not again

    seeded.execute("update raw.ad_campaigns set platform = %s where campaign_id = %s", (platform, campaign))
    seeded.execute("update raw.ad_spend_daily set platform = %s where campaign_id = %s", (platform, campaign))
    assert run(dagbag, MKT).state == "success"
    assert len(hook.posts) == 2
    assert hook.posts[1]["body"]["text"].startswith(
        f":large_green_circle: *{MKT}* resolved for metric_date *{TODAY}*")
    assert "warn (Warning) alerted" in hook.posts[1]["body"]["text"]
    (row,) = alert_rows(seeded, MKT)
    assert row["severity"] == "warn" and row["resolved_at"] is not None


def test_slack_down_changes_no_outcome_and_the_undelivered_alert_goes_out_later(dagbag, seeded, monkeypatch,
                                                                               caplog, capfd):
    """Slack unreachable: the failed run fails exactly as it would (same task states, one try),
    a successful run with a warning still publishes; the alert is logged, recorded as not
    delivered, and the next failure of that date is sent when Slack is back."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{_dead_port()}/services", "password": SECRET}))
    _break_mrr(seeded)
    dr = run(dagbag, CS)
    assert dr.state == "failed"
    assert states(dr) == {"check_sources": "failed", "refresh_state": "upstream_failed",
                          "build_and_validate": "upstream_failed",
                          "publish": "upstream_failed"}
    assert [ti.try_number for ti in dr.get_task_instances() if ti.task_id == "check_sources"] == [1]
    assert "could not post the alert to Slack connection 'slack_alerts'" in caplog.text
    (row,) = alert_rows(seeded, CS)
    assert row["delivered"] is False

    # a warning on a successful run, Slack still down: published all the same
    campaign = seeded.execute("select min(campaign_id) from raw.ad_campaigns where platform is not null").fetchone()[0]
    seeded.execute("update raw.ad_campaigns set platform = 'tiktok_ads' where campaign_id = %s", (campaign,))
    seeded.execute("update raw.ad_spend_daily set platform = 'tiktok_ads' where campaign_id = %s", (campaign,))
    assert run(dagbag, MKT).state == "success" and published(seeded, MKT, TODAY) == 1

    # Slack is back: the failure that was never delivered is sent on the next failing run
    receiver = SlackReceiver()
    receiver.thread.start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", receiver.webhook_connection(SECRET))
        assert run(dagbag, CS).state == "failed"
        assert len(receiver.posts) == 1 and "subscriptions_mrr_non_negative" in receiver.texts[0]
        (row,) = alert_rows(seeded, CS)
        assert row["delivered"] is True
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    out, err = capfd.readouterr()
    assert_no_secret(caplog.text, out, err)


def test_slack_errors_and_rate_limits_during_a_run_change_no_outcome(dagbag, seeded, hook, monkeypatch):
    """429 (Retry-After 1) then 500 then ok: the digest arrives once; the run's outcome and
    timing are those of the failure."""
    monkeypatch.setenv("METRICS_ALERT_TIMEOUT", "2")
    seeded.execute("alter table raw.device_telemetry rename to device_telemetry_gone")
    hook.answers = [(429, {"Retry-After": "1"}, 0), (500, {}, 0)]
    dr = run(dagbag, CS)
    assert dr.state == "failed" and states(dr)["check_sources"] == "failed"
    assert [a["status"] for a in hook.attempts] == [429, 500, 200]
    assert len(hook.posts) == 1


def test_a_missing_source_table_links_its_section(dagbag, seeded, hook):
    seeded.execute("alter table raw.device_telemetry rename to device_telemetry_gone")
    assert run(dagbag, CS).state == "failed"
    (text,) = hook.texts
    assert "What failed: " in text and "source table(s) missing: raw.device_telemetry" in text
    assert "Runbook: docs/runbook.md#missing-or-empty-source" in text
    assert "Failed checks" not in text


def test_a_missing_database_alerts_at_once_without_the_warehouse(dagbag, pg_server, hook, monkeypatch):
    """The warehouse itself is the failure (its database does not exist): the digest goes out
    without check results or dedup, quickly, and links the permanent-error section."""
    from metrics_layer import local

    monkeypatch.setenv(local.WAREHOUSE_ENV, local.connection_json(pg_server, "no_such_database"))
    started = time.monotonic()
    dr = run(dagbag, CS)
    took = time.monotonic() - started
    assert dr.state == "failed" and states(dr)["check_sources"] == "failed"
    (text,) = hook.texts
    assert 'database "no_such_database" does not exist' in text and "not retried" in text
    assert "Runbook: docs/runbook.md#permanent-error" in text
    assert took < 30, took



def test_a_fan_in_failure_goes_to_the_company_owner_and_is_resolved_by_the_next_overview(
        dagbag, seeded, hook):
    """The overview's tier-1 check fails in the fan-in (a published domain table corrupted by
    hand): one digest routed by the company domain, linking the fan-in section, with the fan-in's
    rerun command; the unified table still follows. The domain republishes, the overview passes,
    and the recovery is announced."""
    assert run(dagbag, CS).state == "success"
    assert hook.posts == []
    seeded.execute("update entity.metrics_customer_success set current_mrr = -current_mrr - 1 "
                   "where metric_date = %s", (TODAY,))
    dr = dagbag.get_dag("metrics_unified").test()
    # the run's state is its leaf's: build_unified (trigger rule all_done) succeeded
    assert states(dr) == {"build_overview": "failed", "build_unified": "success"}
    (post,) = hook.posts
    text = post["body"]["text"]
    assert text.startswith(f":red_circle: *metrics_unified* failed for metric_date *{TODAY}*\n"
                           "Task `build_overview` (try 1)")
    assert "Severity: error; owner @metrics-platform" in text
    assert (f"[error] `total_mrr_in_range` (expectation, {TODAY}) on "
            "`metrics_company_overview.total_mrr`") in text
    assert ("Published data: the company overview keeps its last good day; the unified table "
            "still follows the domains.") in text
    assert f"`airflow dags trigger metrics_unified --conf '{{\"metric_dates\": [\"{TODAY}\"]}}'`" in text
    assert "Runbook: docs/runbook.md#fan-in" in text
    (row,) = alert_rows(seeded, "metrics_unified")
    assert (row["metric_date"], row["task_id"], row["kind"]) == (TODAY, "build_overview", "fan-in")

    # the domain republishes the date (its rows are rebuilt from the sources): the overview passes
    assert run(dagbag, CS).state == "success"
    assert dagbag.get_dag("metrics_unified").test().state == "success"
    assert len(hook.posts) == 2
    assert hook.texts[1].startswith(f":large_green_circle: *metrics_unified* resolved for metric_date *{TODAY}*")
    assert "Owner: @metrics-platform" in hook.texts[1]
