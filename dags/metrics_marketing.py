"""Airflow DAG `metrics_marketing`: marketing metrics: ad spend and ROI per platform, MQLs and
their cost, multi-touch attribution, the website funnel and acquisition cost, one row per day
for the whole company.

Consumers: campaign-performance and budget dashboards in Superset, and the fan-in
`metrics_unified`. On failure the on-call person gets one Slack message with the failing step
and the rerun command; the last good day stays published.
"""

from metrics_layer.factory import domain_dag

dag = domain_dag("marketing", __doc__)
