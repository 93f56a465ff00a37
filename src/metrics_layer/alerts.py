"""Slack alerts an on-call person can act on, through the Airflow Slack provider.

Failure: every task's `on_failure_callback` (`SlackAlertNotifier`, fired once when a task has
finally failed) sends ONE digest for the run: DAG, metric_date, severity, the error, each failed
check of the run (metrics_ops.check_results) with observed vs expected and up to five offending
entities, the task log, the runbook section (docs/runbook.md) for this kind of failure and the
exact rerun commands. Success: `after_publish` (called by the publish steps after their commit)
sends a warning digest when the run's `warn` checks failed, and one "resolved" message for the
dates that had alerted and are now published with their checks passing.

Dedup (metrics_ops.alert_log): an alert is identified by (DAG, metric_date, fingerprint of the
failed checks or of the error); the same one delivered within METRICS_ALERT_DEDUP_HOURS (24) is
not sent again (a cleared task, a rerun, the next run of the same date), only counted.

Routing: the registry domain's `alerts` (Slack connection, mention, channel); the fan-in uses the
derived (company) domain's. A `slackwebhook` connection posts to its webhook; a `slack` (Web API)
connection posts to the domain's `channel` with chat.postMessage.

Delivery: slack_sdk retry handlers (429 honouring Retry-After up to a cap, 5xx, refused, reset or
timed-out connections), bounded: at most 1 + METRICS_ALERT_RETRIES attempts of
METRICS_ALERT_TIMEOUT seconds each. An alert that cannot be delivered is logged with its text;
the alert path never raises, so it never changes the outcome of the task it reports on. The
webhook URL, its token and the connection password are registered with Airflow's secrets masker
and removed from every log line this module and slack_sdk write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import date

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

SLACK_CONN_ID = "slack_alerts"
WAREHOUSE_CONN_ID = "metrics_warehouse"
UNIFIED_DAG_ID = "metrics_unified"
MAX_DETAIL = 2500  # Slack truncates long messages; the full text is in the task log
MAX_CHECKS_SHOWN = 8  # failed checks with a section of their own; the rest are counted
MAX_RERUN_DATES = 3
# docs/runbook.md section (GitHub heading anchor) per kind of alert
RUNBOOK_SECTIONS = {
    "check-failed": "Check failed",
    "warning": "Warning",
    "anomaly": "Anomaly",
    "source-check": "Source check",
    "missing-or-empty-source": "Missing or empty source",
    "permanent-error": "Permanent error",
    "transient-error": "Transient error",
    "fan-in": "Fan-in",
    "resolved": "Resolved",
}


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default


def dedup_hours() -> float:
    """The same failure of the same date is not re-sent within this many hours (env
    METRICS_ALERT_DEDUP_HOURS, default 24)."""
    return _env_float("METRICS_ALERT_DEDUP_HOURS", 24)


def http_timeout() -> int:
    """Seconds one HTTP attempt to Slack may take (env METRICS_ALERT_TIMEOUT, default 5)."""
    return max(1, int(_env_float("METRICS_ALERT_TIMEOUT", 5)))


def http_retries() -> int:
    """Retries after the first attempt, shared by every retry handler (env
    METRICS_ALERT_RETRIES, default 2)."""
    return max(0, int(_env_float("METRICS_ALERT_RETRIES", 2)))


def max_retry_after() -> float:
    """A 429 whose Retry-After is longer than this (seconds) is not waited for: the alert is
    logged instead (env METRICS_ALERT_MAX_RETRY_AFTER, default 10)."""
    return _env_float("METRICS_ALERT_MAX_RETRY_AFTER", 10)


def db_connect_timeout() -> int:
    """Seconds to reach the warehouse for check results and dedup before sending without them
    (env METRICS_ALERT_DB_TIMEOUT, default 3)."""
    return max(1, int(_env_float("METRICS_ALERT_DB_TIMEOUT", 3)))


def runbook_url(section: str) -> str:
    """The runbook section's address: METRICS_RUNBOOK_URL (e.g. the runbook's URL in your Git
    host) or, by default, the relative path docs/runbook.md; `#section` appended."""
    base = os.environ.get("METRICS_RUNBOOK_URL") or "docs/runbook.md"
    return f"{base.split('#')[0]}#{section}"


# ---------------------------------------------------------------------------- secrets

_SECRETS: set[str] = set()


def _add_secret(value: str | None) -> None:
    """Never log `value`: our redaction and Airflow's secrets masker (task logs). Like that
    masker, values shorter than 5 characters are not masked (they would garble every text)."""
    if not value or len(value) < 5 or value.lower() == "airflow":
        return
    _SECRETS.add(value)
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # noqa: BLE001 - masking is extra protection; our redaction still applies
        pass


def redact(text) -> str:
    """`text` with every known secret (webhook URL, token, password) replaced by ***."""
    text = str(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record: leave it to the handler
                return True
            clean = redact(message)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            if clean != message:
                record.msg, record.args = clean, ()
        return True


log.addFilter(_RedactFilter())
# slack_sdk's clients log through this logger (not the hook's): at DEBUG (or an unset level) they
# write the webhook URL, and on a connection error they log "Going to retry ... <url>" at INFO.
# Level INFO skips the first; the filter redacts the rest.
_SDK_LOG = logging.getLogger("metrics_layer.alerts.slack_sdk")
_SDK_LOG.setLevel(logging.INFO)
_SDK_LOG.addFilter(_RedactFilter())


# ---------------------------------------------------------------------------- retries

def retry_handlers() -> list:
    """slack_sdk retry handlers: 429 (waits Retry-After, if at most max_retry_after()), any 5xx,
    and connection errors (refused, reset, unreachable, timed out), each with exponential
    backoff and jitter. They share one attempt counter: 1 + http_retries() attempts in all."""
    from http.client import RemoteDisconnected
    from urllib.error import URLError

    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    cap = max_retry_after()

    class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
        """Honours Retry-After, but gives up rather than wait longer than the cap."""

        def _can_retry(self, *, state, request, response=None, error=None) -> bool:
            if not super()._can_retry(state=state, request=request, response=response, error=error):
                return False
            values = {k.lower(): v for k, v in response.headers.items()}.get("retry-after") or ["1"]
            try:
                wait = float(values[0] if isinstance(values, list) else values)
            except ValueError:
                return False
            if wait > cap:
                log.warning("Slack answered 429 with Retry-After %.0fs, more than the %.0fs this "
                            "alert may wait; not retried", wait, cap)
                return False
            return True

    class AnyServerErrorRetryHandler(ServerErrorRetryHandler):
        """Every 5xx, not only 500 and 503."""

        def _can_retry(self, *, state, request, response=None, error=None) -> bool:
            return response is not None and 500 <= response.status_code < 600

    n = http_retries()
    return [
        BoundedRateLimitRetryHandler(max_retry_count=n),
        AnyServerErrorRetryHandler(max_retry_count=n),
        ConnectionErrorRetryHandler(max_retry_count=n, error_types=[
            URLError, ConnectionError, RemoteDisconnected, TimeoutError]),
    ]


# ---------------------------------------------------------------------------- delivery

def send_slack(text: str, conn_id: str = SLACK_CONN_ID, *, blocks: list | None = None,
               channel: str | None = None) -> bool:
    """Post `text` (and Block Kit `blocks`, `text` then being the notification fallback) through
    the Airflow connection `conn_id`: a webhook (`slackwebhook`), or the Web API (`slack`) to
    `channel`. Returns False, after logging why and the text, when there is no connection or the
    post fails after its retries. Never raises."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    started = time.monotonic()
    try:
        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            log.warning("Slack connection %r is not configured; alert not sent:\n%s", conn_id, text)
            return False
        _add_secret((conn.password or "").strip())
        if conn.conn_type != "slack":
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

            hook = SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=http_timeout(),
                                    retry_handlers=retry_handlers(), logger=_SDK_LOG)
            _add_secret(hook.client.url)
        # an error text quoting a secret (a URL in an exception) is not forwarded to Slack
        text = redact(text)
        blocks = json.loads(redact(json.dumps(blocks))) if blocks else blocks
        if conn.conn_type == "slack":
            if not channel:
                log.error("Slack connection %r is a Web API connection but the registry names no "
                          "`alerts.channel`; alert not sent:\n%s", conn_id, text)
                return False
            from airflow.providers.slack.hooks.slack import SlackHook

            hook = SlackHook(slack_conn_id=conn_id, timeout=http_timeout(),
                             retry_handlers=retry_handlers(), logger=_SDK_LOG)
            hook.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        else:
            hook.send(text=text, blocks=blocks)
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the run it reports on
        log.error("could not post the alert to Slack connection %r (gave up after %.1fs): %s: %s"
                  "\nThe alert:\n%s", conn_id, time.monotonic() - started, type(exc).__name__,
                  redact(exc), text)
        return False
    log.info("alert posted to Slack connection %r in %.1fs", conn_id, time.monotonic() - started)
    return True


# ---------------------------------------------------------------------------- routing

@dataclass(frozen=True)
class Route:
    conn_id: str = SLACK_CONN_ID
    mention: str = ""
    channel: str | None = None
    domain: str | None = None


def route_for(dag_id: str, default_conn_id: str = SLACK_CONN_ID) -> Route:
    """Where a DAG's alerts go: its registry domain's `alerts`; the fan-in uses the derived
    (company) domain's; anything else the default connection."""
    try:
        from metrics_layer.registry import derived_domains, load_registry

        domains = list(load_registry().values())
        domain = next((d for d in domains if d.table == dag_id), None)
        if domain is None and dag_id == UNIFIED_DAG_ID:
            domain = next((d for d in derived_domains() if d.alerting), None)
    except Exception as exc:  # noqa: BLE001 - a broken registry must not stop the alert
        log.warning("alert routing: registry not readable (%s); using %r", redact(exc), default_conn_id)
        return Route(conn_id=default_conn_id)
    return route_of(domain, default_conn_id)


def route_of(domain, default_conn_id: str = SLACK_CONN_ID) -> Route:
    if domain is None or domain.alerting is None:
        return Route(conn_id=default_conn_id, domain=getattr(domain, "name", None))
    a = domain.alerting
    return Route(conn_id=a.slack_conn_id, mention=a.mention, channel=a.channel, domain=domain.name)


# ---------------------------------------------------------------------------- what failed

@dataclass(frozen=True)
class FailedCheck:
    """One failed row of metrics_ops.check_results."""

    metric_date: date
    check_kind: str
    check_name: str
    target: str
    metric: str | None
    entity: str | None
    severity: str
    observed: str | None
    expected: str | None

    @property
    def section(self) -> str:
        if self.check_kind == "source":
            return "source-check"
        if self.check_kind == "anomaly":
            return "anomaly"
        return "check-failed" if self.severity == "error" else "warning"

    @property
    def signature(self) -> list:
        return [self.check_kind, self.check_name, self.target, self.metric or "", self.severity]


CHECK_COLUMNS = ("metric_date, check_kind, check_name, target, metric, entity, severity, observed, "
                 "expected")


def failed_checks(conn, dag_id: str, run_id: str, dates: list | None = None,
                  domain: str | None = None) -> list[FailedCheck]:
    """The run's failed checks (errors first, newest date first); [] when the table is absent."""
    if not conn.execute("select to_regclass('metrics_ops.check_results') is not null").fetchone()[0]:
        return []
    sql = (f"select {CHECK_COLUMNS} from metrics_ops.check_results "  # noqa: S608 - constants
           "where dag_id = %s and run_id = %s and not success")
    args: list = [dag_id, run_id]
    if dates is not None:
        sql += " and metric_date = any(%s)"
        args.append(list(dates))
    if domain is not None:
        sql += " and domain = %s"
        args.append(domain)
    sql += " order by severity = 'error' desc, metric_date desc, check_kind, check_name, result_id"
    return [FailedCheck(*r) for r in conn.execute(sql, args).fetchall()]


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen, out = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def failure_section(exc: BaseException | None, dag_id: str, checks: list[FailedCheck]) -> str:
    """The runbook section for a failed task: what kind of failure it is."""
    from metrics_layer import errors

    chain = _chain(exc)
    if dag_id == UNIFIED_DAG_ID:
        return "fan-in"
    if any(isinstance(e, errors.SourceCheckFailed) for e in chain):
        return "source-check"
    if any(isinstance(e, errors.SourceContractError) for e in chain):
        return "missing-or-empty-source"
    blocking = [c for c in checks if c.severity == "error"]
    if any(isinstance(e, errors.ValidationFailed) for e in chain) or (blocking and exc is None):
        if blocking and all(c.check_kind == "anomaly" for c in blocking):
            return "anomaly"
        if any(c.check_kind == "source" for c in blocking):
            return "source-check"
        return "check-failed"
    if exc is None:
        return "transient-error"  # killed (OOM, lost node) or timed out: nothing was raised
    if any(isinstance(e, errors.MetricsError) for e in chain):
        return "permanent-error"
    try:
        transient = errors.is_transient(chain[-1]) or errors.is_transient(exc)
    except Exception:  # noqa: BLE001
        transient = False
    if transient or any(type(e).__name__ == "AirflowTaskTimeout" for e in chain):
        return "transient-error"
    return "permanent-error"


def _warehouse_is_the_failure(exc: BaseException | None) -> bool:
    """A failed connection (no SQLSTATE: refused, no such database or role, authentication):
    reading check results would fail the same way, so the digest goes without them."""
    try:
        import psycopg

        from metrics_layer.errors import _root_db_error

        db = _root_db_error(exc) if exc is not None else None
    except Exception:  # noqa: BLE001
        return False
    return isinstance(db, psycopg.OperationalError) and not db.sqlstate


_VOLATILE = re.compile(r"[0-9a-f]*[0-9][0-9a-f]*", re.I)


def _error_signature(task_id: str, exc: BaseException | None) -> str:
    """What identifies an error across retries and reruns: the task, the error class and its
    message with numbers, ids and timestamps blanked."""
    if exc is None:
        return f"{task_id}|no exception"
    return f"{task_id}|{type(exc).__name__}|{_VOLATILE.sub('#', str(exc))}"


def _fingerprint(parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------- messages

def _esc(text) -> str:
    """Slack mrkdwn control characters in data (error text, SQL, values)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 45] + " ... (truncated; full text in the task log)"


def _link(url: str, label: str) -> str:
    """A Slack link for an absolute URL; a relative path (the default runbook) as code."""
    if re.match(r"^https?://", url):
        return f"<{url}|{label}>"
    return f"{label}: `{url}`"


def rerun_commands(dag_id: str, dates: list) -> list[str]:
    """The exact commands that rerun `dates` of `dag_id` once the cause is fixed."""
    days = sorted({d for d in dates if d is not None}, reverse=True)[:MAX_RERUN_DATES]
    if dag_id == UNIFIED_DAG_ID:
        if days:
            listed = ", ".join(f'"{d}"' for d in sorted(days))
            return [f"airflow dags trigger {dag_id} --conf '{{\"metric_dates\": [{listed}]}}'"]
        return [f"airflow dags trigger {dag_id}"]
    if not days:
        return [f"airflow dags trigger {dag_id} --conf '{{\"metric_date\": \"YYYY-MM-DD\"}}'"]
    every = sorted({d for d in dates if d is not None})
    first, last = every[0], every[-1]
    if len(every) > MAX_RERUN_DATES:  # a range run: one run rebuilds the range again
        cmds = [f"airflow dags trigger {dag_id} --conf '{{\"metric_date\": \"{first}\", "
                f"\"end_date\": \"{last}\"}}'"]
    else:
        cmds = [f"airflow dags trigger {dag_id} --conf '{{\"metric_date\": \"{d}\"}}'" for d in days]
    cmds.append(f"make run DATE={first}" + (f" END={last}" if last != first else ""))
    return cmds


@dataclass
class Digest:
    """One Slack message about one run: a failure (severity error) or warnings."""

    dag_id: str
    run_id: str
    severity: str  # error | warn
    section: str
    route: Route
    metric_date: date | None = None
    task_id: str | None = None
    try_number: int | None = None
    error: str | None = None
    checks: list[FailedCheck] = field(default_factory=list)
    log_url: str | None = None
    dates: list = field(default_factory=list)  # the metric_dates this alert is about
    error_signature: str | None = None

    # ---- identity
    def fingerprints(self) -> dict:
        """metric_date -> fingerprint: that date's failed checks, or the error when the run
        failed with no failed check for it."""
        out = {}
        for d in self.dates:
            sigs = sorted(c.signature for c in self.checks if c.metric_date == d)
            out[d] = _fingerprint(["checks", self.dag_id, sigs] if sigs else
                                  ["error", self.dag_id, self.error_signature])
        return out

    def checks_json(self, d) -> list:
        mine = [c for c in self.checks if c.metric_date == d]
        if mine:
            return [{"check": c.check_name, "kind": c.check_kind, "severity": c.severity,
                     "target": c.target, "metric": c.metric} for c in mine]
        return [{"error": _cut(self.error or "", 300), "task": self.task_id}]

    # ---- content
    @property
    def day_text(self) -> str:
        if self.metric_date:
            return self.metric_date.isoformat()
        if self.dates and self.dates[0] is not None:
            return ", ".join(d.isoformat() for d in sorted(self.dates))
        return "unknown (no logical date, no metric_date param)"

    def _published_note(self) -> str | None:
        if self.severity == "warn":
            return "Published: yes (warnings do not block); readers see this run's data."
        if self.dag_id == UNIFIED_DAG_ID:
            if self.task_id == "build_overview":
                return "Published data: the company overview keeps its last good day; the unified table still follows the domains."
            return None
        if self.task_id != "publish":
            return "Published data: unchanged; readers still see the last good day."
        return None

    def _rerun_text(self) -> str:
        cmds = rerun_commands(self.dag_id, [self.metric_date, *self.dates])
        clear = (f"clear the failed task of run `{self.run_id}` in the Airflow UI, or "
                 if self.severity == "error" else "")
        if self.dag_id == UNIFIED_DAG_ID:
            return f"Rerun once fixed: {clear}`{cmds[0]}`" + (
                f" or `airflow dags trigger {self.dag_id}`" if cmds[0] != f"airflow dags trigger {self.dag_id}" else "")
        parts = [f"`{c}`" for c in cmds if not c.startswith("make ")]
        make = [c for c in cmds if c.startswith("make ")]
        text = f"Rerun once fixed: {clear}{' or '.join(parts)}"
        if make:
            text += f"; locally `{make[0]}` (every domain and the fan-in)"
        return text

    def _headline(self) -> str:
        if self.severity == "warn":
            return (f":large_yellow_circle: *{self.dag_id}* published metric_date *{self.day_text}* "
                    f"with {len(self.checks)} warning(s)")
        return f":red_circle: *{self.dag_id}* failed for metric_date *{self.day_text}*"

    @staticmethod
    def _check_line(c: FailedCheck) -> str:
        where = f"{c.target}.{c.metric}" if c.metric else c.target
        line = (f"[{c.severity}] `{_esc(c.check_name)}` ({c.check_kind}, {c.metric_date}) on "
                f"`{_esc(where)}`: observed {_esc(_cut(c.observed or '?', 200))}, expected "
                f"{_esc(_cut(c.expected or '?', 200))}")
        if c.entity:
            line += f"; entities: {_esc(c.entity)}"
        return line

    def text(self) -> str:
        """Plain text: the notification fallback and what a log shows."""
        lines = [self._headline()]
        if self.task_id:
            lines.append(f"Task `{self.task_id}` (try {self.try_number or '?'}), run `{self.run_id}`")
        else:
            lines.append(f"Run `{self.run_id}`")
        lines.append(f"Severity: {self.severity}" + (f"; owner {self.route.mention}" if self.route.mention else ""))
        if self.error:
            lines.append(f"What failed: {_esc(_cut(self.error, MAX_DETAIL))}")
        if self.checks:
            lines.append(f"Failed checks ({len(self.checks)}):")
            lines += [f"  - {self._check_line(c)}" for c in self.checks[:MAX_CHECKS_SHOWN]]
            if len(self.checks) > MAX_CHECKS_SHOWN:
                lines.append(f"  ... and {len(self.checks) - MAX_CHECKS_SHOWN} more in metrics_ops.check_results")
        note = self._published_note()
        if note:
            lines.append(note)
        lines.append(self._rerun_text())
        lines.append(f"Runbook: {runbook_url(self.section)}")
        if self.log_url:
            lines.append(f"Log: {self.log_url}")
        return "\n".join(lines)

    def blocks(self) -> list[dict]:
        """Block Kit: header, facts, the error, one section per failed check (at most
        MAX_CHECKS_SHOWN), what readers see, the rerun commands, links."""
        icon = ":large_yellow_circle:" if self.severity == "warn" else ":red_circle:"
        verb = "published with warnings" if self.severity == "warn" else "failed"
        header = f"{icon} {self.dag_id} {verb}: metric_date {self.day_text}"
        fields = [f"*DAG*\n`{self.dag_id}`", f"*metric_date*\n{self.day_text}",
                  f"*Severity*\n{self.severity}"]
        if self.route.mention:
            fields.append(f"*Owner*\n{self.route.mention}")
        if self.task_id:
            fields.append(f"*Task*\n`{self.task_id}` (try {self.try_number or '?'})")
        fields.append(f"*Run*\n`{_esc(self.run_id)}`")
        blocks: list[dict] = [
            {"type": "header", "text": {"type": "plain_text", "text": _cut(header, 150), "emoji": True}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        ]
        if self.error:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
                f"*What failed*\n```{_esc(self.error)}```", 2900)}})
        if self.checks:
            blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                       "text": f"*Failed checks ({len(self.checks)})*"}})
            for c in self.checks[:MAX_CHECKS_SHOWN]:
                blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
                    self._check_line(c) + "\n" + _link(runbook_url(c.section),
                                                       f"Runbook: {RUNBOOK_SECTIONS[c.section]}"), 2900)}})
            if len(self.checks) > MAX_CHECKS_SHOWN:
                query = f"select * from entity.metrics_check_results where run_id = '{self.run_id}'"  # noqa: S608 - shown, not run
                blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
                    f"... and {len(self.checks) - MAX_CHECKS_SHOWN} more: `{_esc(query)}`")}]})
        note = self._published_note()
        if note:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": note}})
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(self._rerun_text(), 2900)}})
        links = [_link(runbook_url(self.section), f"Runbook: {RUNBOOK_SECTIONS[self.section]}")]
        if self.log_url:
            links.insert(0, _link(self.log_url, "Task log"))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " | ".join(links)}]})
        return blocks


def _context_facts(context) -> dict:
    from metrics_layer.runctx import metric_date_or_none, metric_dates_or_none

    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag, "dag_id", "?"),
        "task_id": getattr(ti, "task_id", None),
        "try_number": getattr(ti, "try_number", None),
        "run_id": context.get("run_id") or getattr(ti, "run_id", None) or "?",
        "metric_date": metric_date_or_none(context),
        "metric_dates": metric_dates_or_none(context),  # a range run builds several
        "log_url": _safe_attr(ti, "log_url"),
    }


def _safe_attr(obj, name):
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - a property that needs config we do not have
        return None


def failure_digest(context, checks: list[FailedCheck] | None = None,
                   default_conn_id: str = SLACK_CONN_ID) -> Digest:
    """The digest of a failed task from its Airflow context and the run's failed checks."""
    f = _context_facts(context)
    exc = context.get("exception")
    checks = list(checks or [])
    detail = str(exc).strip() if exc is not None else "the task failed (no exception recorded)"
    dates = (sorted({c.metric_date for c in checks}, reverse=True)
             or sorted(f["metric_dates"], reverse=True) or [f["metric_date"]])
    # the fan-in builds many dates: its checks name them (its run date says nothing)
    day = None if f["dag_id"] == UNIFIED_DAG_ID and checks else f["metric_date"]
    return Digest(
        dag_id=f["dag_id"], run_id=f["run_id"], severity="error",
        section=failure_section(exc, f["dag_id"], checks), route=route_for(f["dag_id"], default_conn_id),
        metric_date=day, task_id=f["task_id"], try_number=f["try_number"], error=detail,
        checks=checks, log_url=f["log_url"], dates=dates,
        error_signature=_error_signature(f["task_id"] or "?", exc))


def failure_message(context) -> str:
    """The plain text of a failed task's alert (without check results)."""
    return failure_digest(context).text()


# ---------------------------------------------------------------------------- warehouse

def _warehouse(conn_id: str):
    """A psycopg connection for reading check results and keeping alert_log: one attempt with a
    short connect timeout (the warehouse may be what failed), the layer's session settings and
    short statement and lock timeouts."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from metrics_layer.pipeline import apply_session_settings

    timeout = db_connect_timeout()

    class QuickConnectHook(PostgresHook):
        def _create_connection(self, conn_args):
            conn_args.setdefault("connect_timeout", timeout)
            return super()._create_connection(conn_args)

    hook = QuickConnectHook(postgres_conn_id=conn_id)
    _add_secret(hook.connection.password)
    conn = hook.get_conn()
    try:
        conn.autocommit = True
        apply_session_settings(conn)
        conn.execute("select set_config('statement_timeout', '20s', false), "
                     "set_config('lock_timeout', '60s', false)")
    except BaseException:
        conn.close()
        raise
    return conn


def _has_alert_log(conn) -> bool:
    return conn.execute("select to_regclass('metrics_ops.alert_log') is not null").fetchone()[0]


def _deliver(digest: Digest) -> bool:
    return send_slack(digest.text(), digest.route.conn_id, blocks=digest.blocks(),
                      channel=digest.route.channel)


def _send_deduplicated(conn, digest: Digest) -> str:
    """Send `digest` unless each of its dates already has the same failure delivered within the
    window (then count it as suppressed). Returns 'sent', 'failed' or 'suppressed'."""
    fps = digest.fingerprints()
    dates = [d for d in fps if d is not None]
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"metrics_layer:alerts:{digest.dag_id}",))
        open_rows = conn.execute(
            "select alert_id, metric_date, fingerprint, delivered, "
            "last_sent_at > now() - make_interval(secs => %s) as recent "
            "from metrics_ops.alert_log where dag_id = %s and resolved_at is null "
            "and (metric_date = any(%s) or (metric_date is null and %s))",
            (dedup_hours() * 3600, digest.dag_id, dates, None in fps)).fetchall()
        same = {(r[1], r[2]): r for r in open_rows}
        fresh = [d for d, fp in fps.items()
                 if not ((d, fp) in same and same[(d, fp)][3] and same[(d, fp)][4])]
        if not fresh:
            ids = [same[(d, fp)][0] for d, fp in fps.items()]
            conn.execute("update metrics_ops.alert_log set suppressed = suppressed + 1 "
                         "where alert_id = any(%s)", (ids,))
            log.info("alert for %s %s not sent again: the same failure was alerted within %sh "
                     "(run %s)", digest.dag_id, digest.day_text, dedup_hours(), digest.run_id)
            return "suppressed"
        delivered = _deliver(digest)
        for d, fp in fps.items():
            row = same.get((d, fp))
            if row:
                conn.execute(
                    "update metrics_ops.alert_log set last_sent_at = now(), run_id = %s, "
                    "delivered = delivered or %s, severity = %s, kind = %s, task_id = %s, "
                    "checks = %s::jsonb where alert_id = %s",
                    (digest.run_id, delivered, digest.severity, digest.section, digest.task_id,
                     json.dumps(digest.checks_json(d), default=str), row[0]))
            else:
                conn.execute(
                    "insert into metrics_ops.alert_log (dag_id, metric_date, fingerprint, severity, "
                    "checks, run_id, delivered, kind, task_id) values (%s, %s, %s, %s, %s::jsonb, "
                    "%s, %s, %s, %s)",
                    (digest.dag_id, d, fp, digest.severity, json.dumps(digest.checks_json(d), default=str),
                     digest.run_id, delivered, digest.section, digest.task_id))
    return "sent" if delivered else "failed"


def notify_failure(context, warehouse_conn_id: str = WAREHOUSE_CONN_ID,
                   default_conn_id: str = SLACK_CONN_ID) -> str:
    """The failure callback's work: read the run's failed checks, build the digest, send it
    unless it is a duplicate, record it. Returns 'sent', 'failed', 'suppressed' or 'error'.
    Never raises."""
    try:
        exc = context.get("exception")
        facts = _context_facts(context)
        conn = None
        if not _warehouse_is_the_failure(exc):
            try:
                conn = _warehouse(warehouse_conn_id)
            except Exception as err:  # noqa: BLE001
                log.warning("alert: warehouse not reachable (%s); sending without check results "
                            "or dedup", redact(err).splitlines()[0] if str(err) else type(err).__name__)
        try:
            checks = []
            if conn is not None:
                try:
                    checks = failed_checks(conn, facts["dag_id"], facts["run_id"])
                except Exception as err:  # noqa: BLE001
                    log.warning("alert: could not read the run's check results: %s", redact(err))
            digest = failure_digest(context, checks, default_conn_id)
            if conn is not None:
                try:
                    if _has_alert_log(conn):
                        return _send_deduplicated(conn, digest)
                except Exception as err:  # noqa: BLE001
                    log.warning("alert: dedup bookkeeping failed (%s); sending anyway", redact(err))
            return "sent" if _deliver(digest) else "failed"
        finally:
            if conn is not None:
                conn.close()
    except Exception as err:  # noqa: BLE001 - the alert path never changes the task's outcome
        log.error("alert for a failed task could not be built or sent: %s: %s",
                  type(err).__name__, redact(err))
        return "error"


# ---------------------------------------------------------------------------- success path

def _resolve(conn, dag_id: str, dates: list[date], current: dict, run_id: str,
             task_id: str | None) -> list[tuple]:
    """Close the open alerts of `dates` whose failure this publication no longer has; returns
    (metric_date, kind, checks, first_sent_at, delivered) of each."""
    sql = ("update metrics_ops.alert_log set resolved_at = now(), resolved_run_id = %(run)s "
           "where dag_id = %(dag)s and resolved_at is null and metric_date = any(%(dates)s) "
           "and not ((metric_date, fingerprint) = any(select d, f from unnest(%(cd)s::date[], "
           "%(cf)s::text[]) as c(d, f)))")
    args = {"run": run_id, "dag": dag_id, "dates": dates, "cd": list(current), "cf": list(current.values())}
    if dag_id == UNIFIED_DAG_ID and task_id:
        # the overview's publication resolves the overview's failures, not build_unified's
        sql += " and (task_id is null or task_id = %(task)s)"
        args["task"] = task_id
    sql += " returning metric_date, kind, checks, first_sent_at, delivered, severity"
    return conn.execute(sql, args).fetchall()


def resolved_message(dag_id: str, rows: list[tuple], run_id: str, route: Route) -> tuple[str, list]:
    """Text and blocks of the "resolved" message for the resolved alerts `rows`."""
    days = sorted({r[0] for r in rows})
    day_text = ", ".join(d.isoformat() for d in days)
    lines = []
    for d in days:
        what = []
        for r in (r for r in rows if r[0] == d):
            names = [c.get("check") or _cut(c.get("error") or "error", 80) for c in (r[2] or [])]
            what.append(f"{r[5]} ({RUNBOOK_SECTIONS.get(r[1] or '', r[1] or 'alert')}) alerted "
                        f"{r[3]:%Y-%m-%d %H:%M} UTC: {_esc(', '.join(names))}")
        lines.append(f"  - {d}: " + "; ".join(what))
    head = f":large_green_circle: *{dag_id}* resolved for metric_date *{day_text}*"
    body = (f"Published by run `{_esc(run_id)}` with its checks passing; readers see the new data. "
            "No action needed.")
    text = "\n".join([head, body, *lines, f"Runbook: {runbook_url('resolved')}"]
                     + ([f"Owner: {route.mention}"] if route.mention else []))
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True, "text": _cut(
            f":large_green_circle: {dag_id} resolved: metric_date {day_text}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": body + (
            f" Owner: {route.mention}" if route.mention else "")}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut("*What had alerted*\n" + "\n".join(lines), 2900)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _link(runbook_url("resolved"), "Runbook: Resolved")}]},
    ]
    return text, blocks


def after_publish(domain, dates: list, run_id: str, dag_id: str, context=None,
                  warehouse_conn_id: str = WAREHOUSE_CONN_ID) -> dict:
    """Call after a publication committed `dates` of `domain` (a registry Domain or its name)
    in run `run_id` of `dag_id`: (a) a warning digest when this run's checks of those dates
    failed with severity warn (deduplicated like failures), (b) one "resolved" message for the
    dates of `dag_id` that had alerted and whose failure is gone, marked resolved in alert_log.
    Returns what it did ({"warning": ..., "resolved": [...]}); never raises."""
    done: dict = {"warning": None, "resolved": []}
    try:
        from metrics_layer.registry import load_registry

        if isinstance(domain, str):
            domain = load_registry().get(domain) or next(
                (d for d in load_registry().values() if d.table == domain), None)
        days = sorted({date.fromisoformat(d) if isinstance(d, str) else d for d in dates})
        if not days:
            return done
        facts = _context_facts(context) if context else {}
        route = route_of(domain) if domain is not None else route_for(dag_id)
        if dag_id == UNIFIED_DAG_ID:
            route = route_for(dag_id)
        with _warehouse(warehouse_conn_id) as conn:
            if not _has_alert_log(conn):
                log.warning("metrics_ops.alert_log does not exist (schema not migrated): no "
                            "warnings or resolutions sent")
                return done
            warns = failed_checks(conn, dag_id, run_id, days, getattr(domain, "name", None))
            digest = None
            if warns:
                sections = [c.section for c in warns]
                section = next((s for s in ("source-check", "anomaly", "warning", "check-failed")
                                if s in sections), "warning")
                digest = Digest(dag_id=dag_id, run_id=run_id, severity="warn", section=section,
                                route=route, metric_date=None if dag_id == UNIFIED_DAG_ID
                                else facts.get("metric_date"),
                                task_id=facts.get("task_id"), try_number=facts.get("try_number"),
                                checks=warns, log_url=facts.get("log_url"),
                                dates=sorted({c.metric_date for c in warns}, reverse=True))
            current = digest.fingerprints() if digest else {}
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"metrics_layer:alerts:{dag_id}",))
                rows = _resolve(conn, dag_id, days, current, run_id, facts.get("task_id"))
            if rows:
                done["resolved"] = sorted({r[0] for r in rows})
                announced = [r for r in rows if r[4]]
                if announced:
                    text, blocks = resolved_message(dag_id, announced, run_id, route)
                    send_slack(text, route.conn_id, blocks=blocks, channel=route.channel)
                log.info("%s: alerts resolved for %s (%d announced)", dag_id,
                         ", ".join(map(str, done["resolved"])), len(announced))
            if digest:
                done["warning"] = _send_deduplicated(conn, digest)
    except Exception as err:  # noqa: BLE001 - publishing succeeded; alerting must not undo that
        log.error("alerts after publishing %s %s failed: %s: %s", dag_id, dates, type(err).__name__,
                  redact(err))
    return done


# ---------------------------------------------------------------------------- the callback

class SlackAlertNotifier(BaseNotifier):
    """Task failure callback: one digest per failed run (see the module docstring)."""

    template_fields = ()

    def __init__(self, slack_conn_id: str = SLACK_CONN_ID, warehouse_conn_id: str = WAREHOUSE_CONN_ID):
        super().__init__()
        self.slack_conn_id = slack_conn_id
        self.warehouse_conn_id = warehouse_conn_id

    def notify(self, context) -> None:
        notify_failure(context, self.warehouse_conn_id, self.slack_conn_id)
