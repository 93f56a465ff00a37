"""Calendar helpers. Metric dates are UTC days everywhere: never the machine's local date."""

from __future__ import annotations

from datetime import UTC, date, datetime


def utc_today() -> date:
    return datetime.now(UTC).date()
