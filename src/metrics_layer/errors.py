"""Errors that describe bad input. Tasks turn them into AirflowFailException: retrying cannot fix
bad data, and the message is what the on-call person reads in Slack."""


class MetricsError(Exception):
    """Base class: the message says what is wrong and what to do."""


class SourceContractError(MetricsError):
    """A source table is missing, empty or breaks the documented contract."""


class BuildError(MetricsError):
    """A build produced no rows, duplicate keys or rows for the wrong date."""


class ValidationFailed(MetricsError):
    """A tier-1 expectation suite failed; the day was not published."""
