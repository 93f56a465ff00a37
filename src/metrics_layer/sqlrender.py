"""Render SQL templates from sql/. Jinja fills identifiers only, from a fixed allow-list;
values always travel as driver bind parameters: a template writes ``{{ param('metric_date') }}``,
which renders to the psycopg placeholder ``%(metric_date)s`` (sqlfluff renders it as a literal,
see .sqlfluff), and the caller passes the value."""

from __future__ import annotations

import os
import re
from functools import cache

import jinja2

from metrics_layer.paths import SQL_DIR

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def source_schema() -> str:
    """Schema holding the source tables (the documented contract); `raw` unless overridden."""
    schema = os.environ.get("METRICS_SOURCE_SCHEMA", "raw")
    if not _IDENT.match(schema):
        raise ValueError(f"METRICS_SOURCE_SCHEMA={schema!r} is not a lower-case SQL identifier")
    return schema


def param(name: str) -> str:
    """The bind placeholder for parameter `name` (never its value)."""
    if not _IDENT.match(name):
        raise ValueError(f"bind parameter name {name!r} is not an identifier")
    return f"%({name})s"


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(SQL_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals["param"] = param
    return env


def render(template: str, **context: object) -> str:
    """Render sql/<template>. Context values must be identifiers or registry objects."""
    for key, value in context.items():
        if isinstance(value, str) and not _IDENT.match(value):
            raise ValueError(f"template variable {key}={value!r} is not a safe SQL identifier")
    return _env().get_template(template).render(source_schema=source_schema(), **context)
