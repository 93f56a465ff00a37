"""Airflow DAG `metrics_unified`, the fan-in: once all four domain tables have published (their Assets), rebuild
`entity.metrics_unified_domains`, the long-format table the guide's cross-domain queries read
(metric_date, domain, entity_id, metric_name, metric_value, importance_tier).

The dates rebuilt are every metric_date a domain published since the last unified build (from
metrics_ops.publish_log), so a backfill of any domain flows through; trigger with
`{"metric_dates": ["2026-11-25"]}` to force a date.
"""

from metrics_layer.factory import unified_dag

dag = unified_dag(__doc__)
