"""Airflow DAG `metrics_sales`: sales metrics: pipeline, bookings, win rate, deal efficiency,
activity and lead follow-up for every active sales rep, one row per rep per day.

Consumers: rep scorecards, pipeline reviews and activity tracking in the Superset sales
dashboard, and the fan-in `metrics_unified`. On failure the on-call person gets one Slack
message with the failing step and the rerun command; the last good day stays published.
"""

from metrics_layer.factory import domain_dag

dag = domain_dag("sales", __doc__)
