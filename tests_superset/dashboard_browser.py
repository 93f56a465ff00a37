"""Open Superset dashboards in headless Chromium (Debian's /usr/bin/chromium through Playwright),
log in, wait until every chart has rendered, screenshot each dashboard and report what the page
did, as JSON on stdout.

Runs in Superset's virtualenv (which has Playwright), called by tests_superset/test_superset.py:
    python dashboard_browser.py URL USER PASSWORD OUT_DIR SLUG=N_CHARTS [SLUG=N_CHARTS ...]

Per dashboard it reports: the chart-data requests the front end sent (their query objects), the
responses (status, is_cached, row counts, errors), and per chart container in the DOM: whether it
drew a canvas or a table, error alerts, and "No results" empty states.
"""

from __future__ import annotations

import json
import sys
import time

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

# per chart container: what it shows
INSPECT = """() => [...document.querySelectorAll('[data-test-chart-id]')].map(el => ({
    chart_id: Number(el.getAttribute('data-test-chart-id')),
    name: el.getAttribute('data-test-chart-name'),
    viz_type: el.getAttribute('data-test-viz-type'),
    canvases: el.querySelectorAll('canvas').length,
    tables: el.querySelectorAll('table').length,
    alerts: [...el.querySelectorAll('[role=alert], .ant-alert-error')].map(a => a.innerText.trim()),
    empty: el.innerText.includes('No results were returned'),
    loading: el.querySelectorAll('.loading, [data-test=loading-indicator]').length,
    text: el.innerText.slice(0, 300),
}))"""


def visit(page, base: str, slug: str, n_charts: int, out_dir: str) -> dict:
    requests, responses = [], []

    def on_request(r):
        if "/api/v1/chart/data" in r.url and r.method == "POST":
            requests.append(json.loads(r.post_data or "{}"))

    def on_response(r):
        if "/api/v1/chart/data" not in r.url:
            return
        entry = {"status": r.status, "url": r.url}
        try:
            body = r.json()
            entry["queries"] = [{"is_cached": q.get("is_cached"), "rowcount": q.get("rowcount"),
                                 "error": q.get("error"), "status": q.get("status")}
                                for q in body.get("result", [])]
            entry["message"] = body.get("message") or body.get("errors")
        except Exception as e:  # noqa: BLE001 - report whatever the body was
            entry["message"] = f"unreadable body: {e}"
        responses.append(entry)

    page.on("request", on_request)
    page.on("response", on_response)
    started = time.monotonic()
    # no extra URL parameters: the front end copies them into every query (and its cache key)
    page.goto(f"{base}/superset/dashboard/{slug}/?standalone=1")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        charts = page.evaluate(INSPECT)
        done = (len(responses) >= n_charts and len(charts) >= n_charts
                and all(c["loading"] == 0 and (c["canvases"] or c["tables"] or c["alerts"] or c["empty"])
                        for c in charts))
        if done:
            break
        page.wait_for_timeout(500)
    page.wait_for_load_state("networkidle")
    collapse = page.locator('[data-test="filter-bar__collapse-button"]')
    if collapse.count():
        collapse.first.click()  # the native date filter's bar: folded for the screenshot
    page.wait_for_timeout(1500)  # charts re-layout and ECharts ends its entry animation
    charts = page.evaluate(INSPECT)
    seconds = time.monotonic() - started
    path = f"{out_dir}/superset-{slug}.png"
    page.mouse.move(5, 5)  # no tooltip from where the click left the pointer
    page.wait_for_timeout(300)
    bottom = page.evaluate("() => Math.ceil(Math.max(...[...document.querySelectorAll("
                           "'[data-test=dashboard-component-chart-holder]')]"
                           ".map(e => e.getBoundingClientRect().bottom)))")
    size = page.viewport_size
    page.screenshot(path=path, clip={"x": 0, "y": 0, "width": size["width"],
                                     "height": min(bottom + 24, size["height"])})
    page.remove_listener("request", on_request)
    page.remove_listener("response", on_response)
    return {"slug": slug, "seconds": round(seconds, 1), "screenshot": path, "charts": charts,
            "requests": requests, "responses": responses, "title": page.title()}


def main(argv: list[str]) -> None:
    base, user, password, out_dir, *targets = argv
    report = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1600})
        page.goto(f"{base}/login/")
        page.fill("input#username", user)
        page.fill("input#password", password)
        page.click("[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url, timeout=30000)
        for target in targets:
            slug, n = target.split("=")
            report.append(visit(page, base, slug, int(n), out_dir))
        browser.close()
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
