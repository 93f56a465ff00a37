"""Metrics layer: registry-driven daily metrics tables built in PostgreSQL, orchestrated by Airflow.

Modules are cheap to import (no Airflow, GX or database access at import time) so that DAG files
parse fast; heavy imports happen inside the functions that need them.
"""
