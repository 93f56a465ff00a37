"""Airflow DAG `metrics_unified`, the fan-in: whenever any domain table publishes (its Asset),
rebuild the stale slices of `entity.metrics_api`, the long-format table of every metric value
with its time comparisons, which the guide's cross-domain queries read through the view
`entity.metrics_unified_domains` (metric_date, domain, entity_id, metric_name, metric_value,
importance_tier).

A (domain, metric_date) slice is stale when the domain published that date after the slice was
built (publication versions in metrics_ops.publish_log against metrics_ops.unified_slices), so a
backfill of any single domain flows through, and one domain failing leaves the other three
current. Trigger with `{"metric_dates": ["2026-11-25"]}` to force every domain's slice of a date.
"""

from metrics_layer.factory import unified_dag

dag = unified_dag(__doc__)
