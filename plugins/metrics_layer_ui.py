"""The metrics layer's page in the Airflow 3 UI (Browse > Metrics layer).

For every domain table of the registry, and for the unified table: the latest published
metric_date (when, by which run, how many rows, from metrics_ops.publish_log) and the latest
tier-1 check (from metrics_ops.validation_log); then the metric catalog, straight from the
registry. `GET /metrics-layer/` is the HTML page (server-rendered, no JavaScript), and
`GET /metrics-layer/api/status` the same data as JSON.

The warehouse is read through the Airflow connection `metrics_warehouse` in one short read-only
transaction (connect timeout and statement timeout of a few seconds), so a slow or unreachable
warehouse never hangs the api-server: the page still renders the catalog and says what went wrong.

Airflow imports every .py file in plugins/ as a top-level module in every component (api-server,
scheduler, dag-processor, triggerer, task processes). This module therefore imports only what
registering the plugin needs (FastAPI, Airflow's plugin base class); the metrics_layer package,
the Postgres hook and its driver are imported when a page is requested.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, date, datetime
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

CONN_ID = "metrics_warehouse"
URL_PREFIX = "/metrics-layer"
STATEMENT_TIMEOUT = "5s"
CONNECT_TIMEOUT_S = 5
NO_CACHE = {"Cache-Control": "no-store"}

# latest published metric_date per target, with how many dates the target has
PUBLISHED_SQL = """
select distinct on (target)
    target, metric_date, published_at, run_id, row_count,
    count(*) over (partition by target) as dates_published
from metrics_ops.publish_log
where target = any(%(targets)s)
order by target, metric_date desc
"""

# the most recent validation per target (a failed day is newer than the last published one)
CHECKS_SQL = """
select distinct on (target)
    target, metric_date, run_id, validated_at, success, evaluated, failures
from metrics_ops.validation_log
where target = any(%(targets)s)
order by target, validated_at desc, metric_date desc
"""


# ---------------------------------------------------------------------------- data

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _rows(cur) -> list[dict[str, Any]]:
    names = [c[0] for c in cur.description]
    return [{n: _jsonable(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def _layer() -> tuple[list[Any], str]:
    """The registry's domains and the unified table's name (imported here: see module doc)."""
    from metrics_layer.pipeline import UNIFIED_TABLE
    from metrics_layer.registry import load_registry

    return list(load_registry().values()), UNIFIED_TABLE


def read_warehouse(targets: list[str]) -> dict[str, Any]:
    """Latest publication and latest check per target, in one short read-only transaction.

    `checks` is None when metrics_ops.validation_log does not exist (yet)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=CONN_ID)
    extra = hook.connection.extra_dejson
    if "connect_timeout" not in extra:  # an unreachable host must not hold a request for minutes
        hook.connection.extra = json.dumps({**extra, "connect_timeout": CONNECT_TIMEOUT_S})
    conn = hook.get_conn()
    try:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("set transaction read only")
            cur.execute(f"set local statement_timeout = '{STATEMENT_TIMEOUT}'")
            cur.execute("select to_regclass('metrics_ops.publish_log') is not null, "
                        "to_regclass('metrics_ops.validation_log') is not null")
            has_publish_log, has_validation_log = cur.fetchone()
            published: dict[str, dict] = {}
            checks: dict[str, dict] | None = None
            if has_publish_log:
                cur.execute(PUBLISHED_SQL, {"targets": targets})
                published = {r.pop("target"): r for r in _rows(cur)}
            if has_validation_log:
                cur.execute(CHECKS_SQL, {"targets": targets})
                checks = {}
                for r in _rows(cur):
                    if isinstance(r["failures"], str | bytes):
                        r["failures"] = json.loads(r["failures"])
                    checks[r.pop("target")] = r
        conn.rollback()
    finally:
        conn.close()
    return {"published": published, "checks": checks}


def collect_status() -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data."""
    status: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "connection_id": CONN_ID,
        "warehouse": {"reachable": False, "error": None, "validation_log_exists": False},
        "registry_error": None,
        "tables": [],
        "catalog": [],
    }
    try:
        domains, unified = _layer()
    except Exception as exc:  # noqa: BLE001 - a broken registry must not take the page down
        status["registry_error"] = _first_line(exc)
        return status
    targets = [(d.name, d.table, d.owner) for d in domains] + [(None, unified, None)]
    try:
        found = read_warehouse([t for _, t, _ in targets])
    except Exception as exc:  # noqa: BLE001 - whatever the warehouse does, the page renders
        status["warehouse"]["error"] = _first_line(exc)
        found = {"published": {}, "checks": None}
    else:
        status["warehouse"]["reachable"] = True
        status["warehouse"]["validation_log_exists"] = found["checks"] is not None
    for domain, table, owner in targets:
        status["tables"].append({
            "domain": domain, "table": table, "owner": owner,
            "published": found["published"].get(table),
            "check": (found["checks"] or {}).get(table),
        })
    status["catalog"] = [
        {"domain": d.name, "table": d.table, "owner": d.owner, "metrics": [
            {"name": m.name, "tier": m.tier, "unit": m.unit, "window": m.window,
             "direction": m.direction, "status": m.status, "requires": m.requires}
            for m in d.metrics]}
        for d in domains
    ]
    return status


# ---------------------------------------------------------------------------- HTML

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(iso: str | None) -> str:
    return _e(iso.replace("T", " ").replace("+00:00", " UTC") if iso else None)


STYLE = """
:root { color-scheme: light dark; font-family: system-ui, sans-serif; font-size: 14px; }
body { margin: 1rem 1.5rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; } h2 { font-size: 1.15rem; margin-top: 1.75rem; }
h3 { font-size: 1rem; margin: 1.25rem 0 .4rem; }
.muted { opacity: .7; } code { font-size: .95em; }
table { border-collapse: collapse; margin-bottom: .5rem; }
th, td { text-align: left; vertical-align: top; padding: .3rem .7rem .3rem 0;
         border-bottom: 1px solid color-mix(in srgb, currentColor 15%, transparent); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; } .fail { color: #cf222e; font-weight: 600; }
.alert { border: 1px solid #cf222e; border-radius: 4px; padding: .5rem .75rem; margin: .75rem 0; }
ul.failures { margin: .25rem 0 0; padding-left: 1.1rem; }
"""


def _check_cell(check: dict | None, recorded: bool) -> str:
    if not recorded or check is None:
        return '<td class="muted">no checks recorded</td>'
    verdict = (f'<span class="ok">passed all {_e(check["evaluated"])} checks</span>' if check["success"]
               else f'<span class="fail">failed {len(check["failures"])} of {_e(check["evaluated"])} '
                    'checks</span>')
    lines = [f'{verdict} <span class="muted">for {_e(check["metric_date"])}, validated '
             f'{_when(check["validated_at"])} by run <code>{_e(check["run_id"])}</code></span>']
    if check["failures"]:
        items = []
        for f in check["failures"]:
            f = f if isinstance(f, dict) else {"detail": f}
            column = f' on <code>{_e(f["column"])}</code>' if f.get("column") else ""
            detail = f": {_e(f['detail'])}" if f.get("detail") else ""
            items.append(f"<li><code>{_e(f.get('expectation'))}</code>{column}{detail}</li>")
        lines.append(f'<ul class="failures">{"".join(items)}</ul>')
    return f"<td>{''.join(lines)}</td>"


def _status_html(status: dict[str, Any]) -> str:
    wh = status["warehouse"]
    out = ["<h2>Publication and checks</h2>"]
    if wh["error"]:
        out.append(f'<div class="alert">The warehouse could not be reached through the Airflow '
                   f'connection <code>{_e(status["connection_id"])}</code>: '
                   f'<code>{_e(wh["error"])}</code></div>')
    out.append("<table><tr><th>table</th><th>owner</th><th>latest metric_date</th>"
               "<th>published at</th><th>run</th><th>rows</th><th>latest check</th></tr>")
    for t in status["tables"]:
        p = t["published"]
        name = f"<code>entity.{_e(t['table'])}</code>"
        if t["domain"] is None:
            name += ' <span class="muted">(fan-in)</span>'
        if p:
            pub = (f"<td>{_e(p['metric_date'])} <span class=\"muted\">({_e(p['dates_published'])} "
                   f"dates)</span></td><td>{_when(p['published_at'])}</td>"
                   f"<td><code>{_e(p['run_id'])}</code></td><td class=\"num\">{_e(p['row_count'])}</td>")
        else:
            pub = '<td class="muted" colspan="4">' + ("nothing published yet" if wh["reachable"]
                                                     else "unknown") + "</td>"
        check = (_check_cell(t["check"], wh["validation_log_exists"]) if wh["reachable"]
                 else '<td class="muted">unknown</td>')
        out.append(f"<tr><td>{name}</td><td>{_e(t['owner'])}</td>{pub}{check}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _catalog_html(status: dict[str, Any]) -> str:
    out = ['<h2>Metric catalog</h2><p class="muted">From the registry (<code>include/registry/'
           '*.yaml</code>); the same rows are in <code>entity.metrics_catalog</code>.</p>']
    for d in status["catalog"]:
        out.append(f"<h3>{_e(d['domain'])}: <code>entity.{_e(d['table'])}</code> "
                   f"<span class=\"muted\">owner {_e(d['owner'])}</span></h3>")
        out.append("<table><tr><th>metric</th><th>tier</th><th>unit</th><th>window</th>"
                   "<th>good when</th><th>status</th></tr>")
        for m in d["metrics"]:
            direction = m["direction"].replace("_is_better", "").replace("_", " ")
            state = (_e(m["status"]) if m["status"] == "implemented"
                     else f'<span class="muted">{_e(m["status"])}: requires {_e(m["requires"])}</span>')
            out.append(f"<tr><td><code>{_e(m['name'])}</code></td><td>{_e(m['tier'])}</td>"
                       f"<td>{_e(m['unit'])}</td><td>{_e(m['window'])}</td><td>{_e(direction)}</td>"
                       f"<td>{state}</td></tr>")
        out.append("</table>")
    return "\n".join(out)


def render_page(status: dict[str, Any]) -> str:
    # relative link: the api-server serves this page as <base URL>/metrics-layer/
    body = [f'<h1>Metrics layer</h1><p class="muted">As of {_when(status["generated_at"])} · '
            '<a href="api/status">JSON</a></p>']
    if status["registry_error"]:
        body.append(f'<div class="alert">The metric registry could not be loaded: '
                    f'<code>{_e(status["registry_error"])}</code></div>')
    else:
        body += [_status_html(status), _catalog_html(status)]
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>Metrics layer</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>")


# ---------------------------------------------------------------------------- app and plugin

app = FastAPI(title="Metrics layer", docs_url=None, redoc_url=None, openapi_url=None)


# plain `def`: FastAPI runs them in its thread pool, so the blocking read never stalls the server
@app.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    return HTMLResponse(render_page(collect_status()), headers=NO_CACHE)


@app.get("/api/status")
def api_status() -> JSONResponse:
    return JSONResponse(collect_status(), headers=NO_CACHE)


class MetricsLayerPlugin(AirflowPlugin):
    name = "metrics_layer"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "metrics_layer_ui"}]
    # a menu entry under Browse; with url_route the page is shown inside the UI (an iframe of
    # href, which is relative to the UI's base URL, so it works behind a path prefix too)
    external_views = [{
        "name": "Metrics layer",
        "href": URL_PREFIX.lstrip("/") + "/",
        "url_route": "metrics-layer",
        "destination": "nav",
        "category": "browse",
    }]
