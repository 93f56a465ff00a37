"""Airflow DAG `metrics_customer_success`: customer success metrics: health, churn risk, engagement, adoption, support and device
operations for every active customer, one row per customer per day.

Consumers: CS dashboards in Superset, the fan-in `metrics_unified`. On failure the on-call
person gets one Slack message with the failing step and the rerun command; the last good day
stays published.
"""

from metrics_layer.factory import domain_dag

dag = domain_dag("customer_success", __doc__)
