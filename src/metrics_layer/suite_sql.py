"""A domain's Great Expectations suite evaluated by PostgreSQL in one statement per staged day.

Running a suite through GX costs 0.3-0.5 s per domain-day whatever the data size (about 20 ms of
Python per expectation), more than building a small domain's whole day. The expectation types
our suites use have exact SQL meanings, so the hot path evaluates them here, with GX's rules:

- ``expect_column_values_to_be_between``: a non-null value below ``min_value`` or above
  ``max_value`` (inclusive bounds; ``strict_min``/``strict_max`` make them exclusive) is unexpected;
  nulls are missing, not unexpected;
- ``expect_column_values_to_be_in_set``: a non-null value outside ``value_set`` is unexpected;
- ``expect_column_values_to_not_be_null``: a null is unexpected;
- ``expect_compound_columns_to_be_unique``: every row whose combination occurs more than once is
  unexpected (rows whose columns are all null are ignored);
- ``expect_table_row_count_to_equal`` / ``_to_be_between``: the row count (inclusive bounds);
- ``unexpected_rows_expectation``: the query's rows (``{batch}`` = the day's rows) are unexpected.

Every expectation must succeed fully (no ``mostly``). A suite using any other type or argument is
not compiled: it runs through GX as before (`compile_suite` returns None). The results are handed
to the same formatting as GX's, so a stored result or an alert reads the same whichever engine
produced it; tests/test_suite_sql.py runs both engines on good and broken days and compares
every verdict, count and offending row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import partial
from types import SimpleNamespace

from psycopg.types.json import set_json_loads

from metrics_layer.registry import Domain

SAMPLE = 20  # offending values/rows kept per check (results show five)
_COLUMN_TYPES = {"expect_column_values_to_be_between", "expect_column_values_to_be_in_set",
                 "expect_column_values_to_not_be_null"}
_KWARGS = {
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_in_set": {"column", "value_set"},
    "expect_column_values_to_not_be_null": {"column"},
    "expect_compound_columns_to_be_unique": {"column_list"},
    "expect_table_row_count_to_equal": {"value"},
    "expect_table_row_count_to_be_between": {"min_value", "max_value"},
    "unexpected_rows_expectation": {"unexpected_rows_query"},
}


@dataclass
class CompiledSuite:
    domain: Domain
    expectations: list[dict]
    sql: str  # one statement; %(...)s placeholders only for the batch's own filter
    columns: list[str] = field(default_factory=list)


def _ident(name: str, known: set[str]) -> str:
    if name not in known:
        raise ValueError(f"column {name!r} is not a column of the table")
    return f'"{name}"'


def compile_suite(domain: Domain, suite: dict, relation: str, where: str) -> CompiledSuite | None:
    """One SQL statement evaluating every expectation of `suite` on the rows of `relation`
    matching `where` (a predicate built by the caller from validated values), or None when the
    suite uses anything this module does not evaluate exactly as GX does."""
    expectations = suite["expectations"]
    known = set(domain.table_columns)
    ident = domain.id_column
    parts = ["counts.n"]
    bad_counts: list[str] = []  # the map checks' counts, all in one pass over the batch
    try:
        for e in expectations:
            typ, kw = e["type"], e.get("kwargs") or {}
            if typ not in _KWARGS or set(kw) - _KWARGS[typ] or kw.get("mostly") not in (None, 1, 1.0):
                return None
            if typ in _COLUMN_TYPES:
                col = _ident(kw["column"], known)
                if typ == "expect_column_values_to_be_between":
                    lo, hi = kw.get("min_value"), kw.get("max_value")
                    conds = []
                    if lo is not None:
                        conds.append(f"{col} {'<=' if kw.get('strict_min') else '<'} {float(lo)!r}::numeric")
                    if hi is not None:
                        conds.append(f"{col} {'>=' if kw.get('strict_max') else '>'} {float(hi)!r}::numeric")
                    bad = f"{col} is not null and ({' or '.join(conds) or 'false'})"
                elif typ == "expect_column_values_to_be_in_set":
                    values = ", ".join(_literal(v) for v in kw["value_set"])
                    bad = f"{col} is not null and {col}::text not in ({values or 'null'})"
                else:
                    bad = f"{col} is null"
                bad_counts.append(f"count(*) filter (where {bad})")
                parts.append(_map_check(bad, f'"{ident}"', col, f"counts.b{len(bad_counts)}"))
            elif typ == "expect_compound_columns_to_be_unique":
                cols = ", ".join(_ident(c, known) for c in kw["column_list"])
                nulls = " and ".join(f"{_ident(c, known)} is null" for c in kw["column_list"])
                # columns checked against the registry
                parts.append(
                    "(select json_build_object('n', count(*), 'bad', count(*) filter (where d.k > 1), "  # noqa: S608
                    "'rows', (select coalesce(json_agg(s), '[]') from (select json_build_object("
                    f"'id', d2.id, 'v', d2.v) as s from (select \"{ident}\" as id, json_build_array({cols}) as v, "
                    f"count(*) over (partition by {cols}) as k from batch where not ({nulls})) as d2 "
                    f"where d2.k > 1 order by d2.id limit {SAMPLE}) as x)) from (select count(*) over "
                    f"(partition by {cols}) as k from batch where not ({nulls})) as d)")
            elif typ.startswith("expect_table_row_count"):
                parts.append("null")  # from the row count itself
            else:
                query = kw["unexpected_rows_query"].replace("{batch}", "batch")
                # the suite's own SQL, from the repository (as GX runs it)
                parts.append(
                    f"(select json_build_object('n', (select count(*) from ({query}) as q), 'rows', "  # noqa: S608
                    f"(select coalesce(json_agg(row_to_json(q)), '[]') from (select * from ({query}) as q "
                    f"limit {SAMPLE}) as q)))")
    except (KeyError, TypeError, ValueError):
        return None
    select = ",\n    ".join(parts)
    counts = ", ".join(["count(*) as n"] + [f"{c} as b{i}" for i, c in enumerate(bad_counts, 1)])
    sql = (f"with batch as materialized (select * from {relation} where {where}),\n"  # noqa: S608
           f"counts as (select {counts} from batch)\n"
           f"select\n    {select}\nfrom counts")
    return CompiledSuite(domain, expectations, sql)


def _literal(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"unsupported set member {value!r}")
    return "'" + str(value).replace("'", "''") + "'"


def _map_check(bad: str, ident: str, col: str, count: str) -> str:
    """A column check's cell: the batch's row count, the offending rows' count (`count`, from
    the one pass that counts every check) and, only when there are any, the first SAMPLE of
    them (a subquery under CASE runs only when its branch is taken)."""
    return (f"json_build_object('n', counts.n, 'bad', {count}, 'rows', case when {count} > 0 then "  # noqa: S608
            f"(select coalesce(json_agg(s), '[]') from (select json_build_object('id', {ident}, 'v', "
            f"{col}::text) as s from batch where {bad} order by {ident} limit {SAMPLE}) as x) "
            "else '[]'::json end)")


def _value(v):
    """Values as GX reports them (numerics and dates as text)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, list):
        return [_value(x) for x in v]
    return str(v)


def _native(value, sql_type: str):
    """A JSON value as psycopg would return the column (GX shows those)."""
    if value is None:
        return None
    if sql_type == "date":
        return date.fromisoformat(value)
    if sql_type.startswith("numeric"):
        return Decimal(str(value))
    return value


def evaluate(conn, compiled: CompiledSuite, params: dict | None = None) -> list[SimpleNamespace]:
    """Run the statement; return one GX-shaped result per expectation (`expectation_config`,
    `result`, `success`, `exception_info`), in suite order."""
    cur = conn.cursor()
    # numbers in the offending rows keep their scale ("-400.50"), as GX shows Decimals
    set_json_loads(partial(json.loads, parse_float=Decimal), cur)
    row = cur.execute(compiled.sql, params or {}).fetchone()
    rows_total, cells = row[0], row[1:]
    ident = compiled.domain.id_column
    out = []
    for e, cell in zip(compiled.expectations, cells, strict=True):
        typ, kw = e["type"], dict(e.get("kwargs") or {})
        if typ == "expect_column_values_to_be_between":  # GX keeps its bounds as floats
            kw.update({k: float(kw[k]) for k in ("min_value", "max_value") if kw.get(k) is not None})
        cfg = SimpleNamespace(type=typ, kwargs=kw, meta=e.get("meta") or {}, description=e.get("description"))
        cell = json.loads(cell) if isinstance(cell, str) else cell
        if typ == "expect_table_row_count_to_equal":
            result, ok = {"observed_value": rows_total}, rows_total == kw["value"]
        elif typ == "expect_table_row_count_to_be_between":
            lo, hi = kw.get("min_value"), kw.get("max_value")
            result = {"observed_value": rows_total}
            ok = (lo is None or rows_total >= lo) and (hi is None or rows_total <= hi)
        elif typ == "unexpected_rows_expectation":
            rows = [{k: _value(v) for k, v in r.items()} for r in cell["rows"]]
            result, ok = {"observed_value": cell["n"], "details": {"unexpected_rows": rows}}, cell["n"] == 0
        elif typ == "expect_compound_columns_to_be_unique":
            # GX lists the duplicated combinations as Python values, without row ids
            types = compiled.domain.table_columns
            values = [{c: _native(v, types[c]) for c, v in zip(kw["column_list"], r["v"], strict=True)}
                      for r in cell["rows"]]
            result = {"element_count": cell["n"], "unexpected_count": cell["bad"],
                      "partial_unexpected_list": values}
            ok = cell["bad"] == 0
        else:
            column = kw["column"]
            sample = cell["rows"]
            result = {"element_count": cell["n"], "unexpected_count": cell["bad"],
                      "partial_unexpected_list": [r["v"] for r in sample],
                      "unexpected_index_list": [{ident: r["id"], column: r["v"]} for r in sample]}
            ok = cell["bad"] == 0
        out.append(SimpleNamespace(expectation_config=cfg, result=result, success=ok, exception_info=None))
    return out
