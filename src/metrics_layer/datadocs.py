"""Great Expectations Data Docs of the published tables (`make docs`), built outside DAG runs.

Each domain's suite is validated on its latest published metric_dates (entity.<table>, one batch
per date) and the results are rendered into a static site: `<out>/index.html`. The DAGs never
build Data Docs: validation inside a run stays small, and its results are in
metrics_ops.check_results."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from metrics_layer.paths import LOCAL_DIR

log = logging.getLogger(__name__)

DEFAULT_OUT = LOCAL_DIR / "data_docs"
SITE = "metrics_layer"


def build(out: Path = DEFAULT_OUT, days: int = 7, conn_id: str = "metrics_warehouse") -> Path:
    """Validate the last `days` published dates of every domain and write the site; returns the
    path of its index.html."""
    from metrics_layer import pipeline
    from metrics_layer.registry import load_registry
    from metrics_layer.validation import _engine_kwargs, load_suite_json, quiet_gx_logging

    quiet_gx_logging()
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    started = time.monotonic()
    out = Path(out).resolve()
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    ctx.add_data_docs_site(site_name=SITE, site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    source = ctx.data_sources.add_sql("warehouse", connection_string="postgresql+psycopg://",
                                      kwargs=_engine_kwargs(conn_id))
    validated = 0
    for domain in load_registry().values():
        with pipeline.connect(conn_id) as conn:
            dates = [r[0] for r in conn.execute(
                "select metric_date from metrics_ops.publish_log where target = %s "
                "order by metric_date desc limit %s", (domain.table, days)).fetchall()]
        if not dates:
            log.warning("%s: nothing published yet, no Data Docs page", domain.table)
            continue
        suite = ctx.suites.add(gx.ExpectationSuite(**load_suite_json(domain)))
        for d in sorted(dates):
            asset = source.add_query_asset(
                f"{domain.table}_{d:%Y%m%d}",
                query=f"select * from entity.{domain.table} where metric_date = date '{d.isoformat()}'")  # noqa: S608
            batch_def = asset.add_batch_definition_whole_table(f"{domain.table} {d}")
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(
                name=f"{domain.table} {d}", data=batch_def, suite=suite))
            checkpoint = ctx.checkpoints.add(gx.Checkpoint(
                name=f"{domain.table} {d}", validation_definitions=[vd],
                actions=[UpdateDataDocsAction(name="docs", site_names=[SITE])],
                result_format={"result_format": "SUMMARY"}))
            checkpoint.run()
            validated += 1
    ctx.build_data_docs(site_names=[SITE])
    index = out / "index.html"
    log.info("Data Docs: %d validations in %.1fs: %s", validated, time.monotonic() - started, index)
    return index
