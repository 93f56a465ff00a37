"""Airflow DAG `metrics_product_analytics`: product usage metrics for the product as a whole:
daily/weekly/monthly active users, stickiness, session engagement, power users, platform mix and
30-day retention, one row per day (product_scope = 'all').

Consumers: the Product dashboard in Superset (DAU/WAU/MAU trends, platform usage), the guide's
time-series queries through the fan-in `metrics_unified` (domain 'product'). On failure the
on-call person gets one Slack message with the failing step and the rerun command; the last good
day stays published.
"""

from metrics_layer.factory import domain_dag

dag = domain_dag("product", __doc__)
