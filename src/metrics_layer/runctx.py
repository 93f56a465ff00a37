"""What a run is about: its metric_date, from the Airflow task context.

The rule, in order: the `metric_date` param (`--conf '{"metric_date": "2026-11-25"}'`), else the
run's logical date, else (a run with a null logical date: `airflow dags trigger` without
`--logical-date`, the REST API, an Asset-triggered run) the date of its `run_after`, i.e. the day
the run was asked for. All in UTC. Domain DAGs pin their schedule to a CronTriggerTimetable, so
the scheduled run at 00:00 UTC on D has logical date D whatever `create_cron_data_intervals` says.

A run builds one metric_date, or a range of them: the `end_date` param makes it build every date
from its metric_date through end_date in one run (`metric_dates`), the set-based backfill path.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from metrics_layer.errors import ConfigurationError

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
# the longest range one run builds (a year and a day: a leap year's dates and one more)
MAX_RANGE_DAYS = 367


def _utc_date(value) -> date | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.date()
    return value


def metric_date(context) -> date:
    """The metric_date of the run in `context` (see the module docstring for the rule)."""
    params = context.get("params") or {}
    wanted = params.get("metric_date")
    if wanted:
        if not re.match(DATE_PATTERN, str(wanted)):
            raise ConfigurationError(f"param metric_date={wanted!r} is not a date (YYYY-MM-DD)")
        return date.fromisoformat(wanted)
    dag_run = context.get("dag_run")
    for value in (context.get("logical_date"), getattr(dag_run, "logical_date", None),
                  getattr(dag_run, "run_after", None)):
        if value is not None:
            return _utc_date(value)
    raise ConfigurationError(
        "this run has neither a logical date nor a run_after date; pass one: "
        "`airflow dags trigger <dag> --logical-date 2026-11-25` or "
        "`--conf '{\"metric_date\": \"2026-11-25\"}'`")


def metric_dates(context) -> list[date]:
    """Every metric_date the run builds: its metric_date, through the `end_date` param if set."""
    first = metric_date(context)
    end = (context.get("params") or {}).get("end_date")
    if not end:
        return [first]
    if not re.match(DATE_PATTERN, str(end)):
        raise ConfigurationError(f"param end_date={end!r} is not a date (YYYY-MM-DD)")
    last = date.fromisoformat(end)
    if last < first:
        raise ConfigurationError(f"param end_date={last} is before the run's metric_date {first}: "
                                 "nothing to build; pass metric_date <= end_date")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise ConfigurationError(f"{first}..{last} is {(last - first).days + 1} days; one run builds at "
                                 f"most {MAX_RANGE_DAYS}: split the range into several runs")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def metric_date_or_none(context) -> date | None:
    """metric_date for alerts: never raises (an alert about a broken context is still sent)."""
    try:
        return metric_date(context)
    except Exception:  # noqa: BLE001 - the alert must go out whatever the context holds
        return None


def metric_dates_or_none(context) -> list[date]:
    """metric_dates for alerts: never raises ([] when the context has no usable dates)."""
    try:
        return metric_dates(context)
    except Exception:  # noqa: BLE001 - the alert must go out whatever the context holds
        day = metric_date_or_none(context)
        return [day] if day else []
