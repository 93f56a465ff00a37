"""One warehouse step of the customer-success domain in a process of its own, for
tests/test_faults.py to kill with SIGKILL mid-transaction, as a dying Airflow worker would be:

    python tests/fault_step.py build|publish YYYY-MM-DD RUN_ID

The warehouse is AIRFLOW_CONN_METRICS_WAREHOUSE from the environment (the tests set it)."""

from __future__ import annotations

import sys
from datetime import date

from metrics_layer import pipeline
from metrics_layer.registry import load_registry

STEPS = {"build": pipeline.build_staging, "publish": pipeline.publish}


def main(step: str, day: str, run_id: str) -> None:
    cs = load_registry()["customer_success"]
    rows = pipeline.run(STEPS[step], cs, date.fromisoformat(day), run_id)
    sys.stdout.write(f"{step} {day} {run_id}: {rows} rows\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
