"""Slack alerts through the Airflow Slack provider (connection id `slack_alerts`, a Slack
webhook). One message per failed task, written for the on-call person: which DAG, which
metric_date, which task, what failed, what is still published, and the exact rerun command.
With no `slack_alerts` connection the alert is logged as a warning and nothing else changes."""

from __future__ import annotations

import logging

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

SLACK_CONN_ID = "slack_alerts"
MAX_DETAIL = 2500  # Slack truncates long messages; the full text is in the task log


def failure_message(context) -> str:
    from metrics_layer.runctx import metric_date_or_none

    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or context["dag"].dag_id
    task_id = getattr(ti, "task_id", "?")
    day = metric_date_or_none(context)
    ds = day.isoformat() if day else "unknown (no logical date, no metric_date param)"
    run_id = context.get("run_id", "?")
    exc = context.get("exception")
    detail = str(exc) if exc is not None else "the task failed (no exception recorded)"
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + " ... (truncated; full text in the task log)"
    lines = [
        f":red_circle: *{dag_id}* failed for metric_date *{ds}*",
        f"Task `{task_id}` (try {getattr(ti, 'try_number', '?')}), run `{run_id}`",
        f"What failed: {detail}",
    ]
    if task_id != "publish" and dag_id != "metrics_unified":
        lines.append("Published data: unchanged; readers still see the last good day.")
    if day and dag_id != "metrics_unified":
        lines.append(f"Rerun once fixed: clear the failed task of run `{run_id}` in the Airflow UI, "
                     f"or `airflow dags trigger {dag_id} --conf '{{\"metric_date\": \"{ds}\"}}'`; "
                     f"locally `make run DATE={ds}` (every domain and the fan-in)")
    else:
        lines.append(f"Rerun once fixed: clear the failed task of run `{run_id}` in the Airflow UI, "
                     f"or `airflow dags trigger {dag_id}`")
    url = getattr(ti, "log_url", None)
    if url:
        lines.append(f"Log: {url}")
    return "\n".join(lines)


def send_slack(text: str, conn_id: str = SLACK_CONN_ID) -> bool:
    """Post `text`; returns False (after logging why) when there is no connection or the post
    fails. Alerting never changes the outcome of the run it reports on."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.warning("Slack connection %r is not configured; alert not sent:\n%s", conn_id, text)
        return False
    try:
        SlackWebhookHook(slack_webhook_conn_id=conn_id).send(text=text)
    except Exception:  # noqa: BLE001 - an alert must never fail the run it reports on
        log.exception("could not post the alert to Slack connection %r:\n%s", conn_id, text)
        return False
    return True


class SlackAlertNotifier(BaseNotifier):
    """Task failure callback: one Slack message per failed task."""

    template_fields = ()

    def __init__(self, slack_conn_id: str = SLACK_CONN_ID):
        super().__init__()
        self.slack_conn_id = slack_conn_id

    def notify(self, context) -> None:
        send_slack(failure_message(context), self.slack_conn_id)
