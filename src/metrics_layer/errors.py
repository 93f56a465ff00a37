"""Errors, and which of them a retry can fix.

Bad input (MetricsError) and anything else that will not fix itself fails a task at once and
alerts (AirflowFailException: no retries); transient trouble (connection refused, a timeout, a
deadlock, a serialization or lock-timeout error, a server restart) is retried with backoff, first
inside the task (tenacity, seconds) and then by Airflow (minutes). `is_transient` is the one rule.
"""

from __future__ import annotations


class MetricsError(Exception):
    """Base class: the message says what is wrong and what to do."""


class SourceContractError(MetricsError):
    """A source table is missing, empty or breaks the documented contract."""


class BuildError(MetricsError):
    """A build produced no rows, duplicate keys or rows for the wrong date."""


class ValidationFailed(MetricsError):
    """A tier-1 expectation suite failed; the day was not published."""


class SourceCheckFailed(MetricsError):
    """Source rows the run reads break the contract (an error-severity source check found
    them): the day is not built; the message names the rows (docs/runbook.md#source-check)."""


class TransientError(Exception):
    """Trouble a retry can fix (e.g. a lock held by a long reader); the message says what."""


class WarehouseBusy(TransientError):
    """A lock could not be had within lock_timeout; the message names the sessions in the way."""


class ConfigurationError(MetricsError):
    """The run cannot start: a missing date, a warehouse that does not accept us, ..."""


# SQLSTATEs a retry can fix: connection exceptions (class 08), serialization failure, deadlock,
# lock timeout, statement timeout / cancel, server shutting down or starting up, out of resources.
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "58")
TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "57P05"}
# A failed connection carries no SQLSTATE in psycopg: these server messages will not fix
# themselves (missing database or role, authentication, pg_hba); anything else at connect time
# (refused, no such socket, timeout, "the database system is starting up") is transient.
PERMANENT_CONNECT_MESSAGES = ("does not exist", "authentication failed", "no pg_hba.conf entry",
                              "password authentication", "permission denied", "invalid password",
                              "not permitted to log in", "sslmode value", "invalid connection option",
                              "invalid integer value", "could not translate host name")


def _root_db_error(exc: BaseException):
    """The psycopg error behind `exc` (SQLAlchemy wraps it in .orig; chains use __cause__)."""
    import psycopg

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, psycopg.Error):
            return exc
        orig = getattr(exc, "orig", None)
        if isinstance(orig, psycopg.Error):
            return orig
        exc = exc.__cause__ or exc.__context__
    return None


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same step later can succeed."""
    import psycopg

    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, MetricsError):
        return False
    db = _root_db_error(exc)
    if db is None:
        # not a database error: a network-level error is transient, a bug or bad input is not
        return isinstance(exc, ConnectionError | TimeoutError)
    state = db.sqlstate
    if state:
        return state in TRANSIENT_SQLSTATES or state[:2] in TRANSIENT_SQLSTATE_CLASSES
    if isinstance(db, psycopg.OperationalError):
        message = str(db).lower()
        return not any(m in message for m in PERMANENT_CONNECT_MESSAGES)
    return False


def describe(exc: BaseException) -> str:
    """One line for the log and the alert: the error class, its SQLSTATE, the first message line."""
    db = _root_db_error(exc)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if db is not None and db.sqlstate:
        return f"{type(db).__name__} (SQLSTATE {db.sqlstate}): {first}"
    return f"{type(exc).__name__}: {first}"
