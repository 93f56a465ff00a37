"""docker-compose.yaml is validated by the real Compose v2 binary (no Docker engine here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import compose

from conftest import ROOT

BINARY = Path(compose.__file__).parent / "docker-compose"
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler",
                    "airflow-dag-processor", "airflow-triggerer"}


def _compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), "-f", str(ROOT / "docker-compose.yaml"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_compose_file_is_valid():
    r = _compose("config", "-q")
    assert r.returncode == 0, r.stderr


def test_compose_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text((ROOT / "docker-compose.yaml").read_text().replace("image: postgres:17", "image: [postgres]", 1))
    r = subprocess.run([str(BINARY), "-f", str(broken), "config", "-q"], capture_output=True, text=True)
    assert r.returncode == 1


def test_stack_mounts_the_package_and_sets_both_connections():
    cfg = json.loads(_compose("config", "--format", "json").stdout)
    services = cfg["services"]
    assert AIRFLOW_SERVICES | {"warehouse", "airflow-db"} == set(services)
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        assert svc["image"] == "metrics-layer-airflow:3.3.2"
        env = svc["environment"]
        assert env["AIRFLOW_CONN_METRICS_WAREHOUSE"].startswith("postgresql://metrics:")
        assert "AIRFLOW_CONN_SLACK_ALERTS" in env
        targets = {}
        for v in svc["volumes"]:
            assert Path(v["source"]).exists(), v["source"]
            targets[v["target"]] = Path(v["source"]).name
        assert targets == {"/opt/airflow/dags": "dags", "/opt/airflow/plugins": "plugins",
                           "/opt/airflow/sql": "sql", "/opt/airflow/include": "include",
                           "/opt/airflow/docs": "docs"}
    assert "FROM apache/airflow:3.3.2-python3.11" in (ROOT / "Dockerfile").read_text()
