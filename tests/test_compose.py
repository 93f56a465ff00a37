"""docker-compose.yaml is validated by the real Compose v2 binary (no Docker engine here)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import compose

from conftest import ROOT

BINARY = Path(compose.__file__).parent / "docker-compose"
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler",
                    "airflow-dag-processor", "airflow-triggerer"}
BIND_MOUNTS = {"/opt/airflow/dags": "dags", "/opt/airflow/plugins": "plugins",
               "/opt/metrics-layer/src": "src", "/opt/metrics-layer/sql": "sql",
               "/opt/metrics-layer/include": "include", "/opt/metrics-layer/docs": "docs"}
NAMED_VOLUMES = {"/opt/airflow/logs": "airflow-logs", "/opt/airflow/auth": "airflow-auth"}
SHARED_SECRETS = ("AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET")


def _compose(*args: str, env_file: Path | None = None) -> subprocess.CompletedProcess:
    extra = ["--env-file", str(env_file)] if env_file else []
    return subprocess.run([str(BINARY), "-f", str(ROOT / "docker-compose.yaml"), *extra, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def _config(env_file: Path | None = None) -> dict:
    r = _compose("config", "--format", "json", env_file=env_file)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_file_is_valid():
    r = _compose("config", "-q")
    assert r.returncode == 0, r.stderr


def test_compose_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text((ROOT / "docker-compose.yaml").read_text().replace("image: postgres:17", "image: [postgres]", 1))
    r = subprocess.run([str(BINARY), "-f", str(broken), "config", "-q"], capture_output=True, text=True)
    assert r.returncode == 1


def test_stack_mounts_the_package_and_sets_both_connections():
    cfg = _config()
    services = cfg["services"]
    assert AIRFLOW_SERVICES | {"warehouse", "airflow-db"} == set(services)
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        assert svc["image"] == "metrics-layer-airflow:3.3.2"
        env = svc["environment"]
        assert env["AIRFLOW_CONN_METRICS_WAREHOUSE"].startswith("postgresql://metrics:")
        assert "AIRFLOW_CONN_SLACK_ALERTS" in env
        assert env["METRICS_LAYER_HOME"] == "/opt/metrics-layer"
        binds, volumes = {}, {}
        for v in svc["volumes"]:
            if v["type"] == "bind":
                assert Path(v["source"]).is_dir(), v["source"]
                assert Path(v["source"]).parent == ROOT, v["source"]
                assert v.get("read_only") is True, v  # containers never write into the checkout
                binds[v["target"]] = Path(v["source"]).name
            else:
                assert v["type"] == "volume", v
                volumes[v["target"]] = v["source"]
        assert binds == BIND_MOUNTS, name
        assert volumes == NAMED_VOLUMES, name
    assert set(NAMED_VOLUMES.values()) <= set(cfg["volumes"])


def test_every_airflow_service_shares_logs_and_secrets(tmp_path):
    """The api-server shows task logs from the shared volume (finished tasks) or from the
    scheduler's/triggerer's log server (running tasks), which accepts only tokens signed with the
    same [api] secret_key; with a .env, each secret comes from it, identical everywhere."""
    env_file = tmp_path / ".env"
    env_file.write_text("AIRFLOW_API_SECRET_KEY=from-dot-env\nAIRFLOW_JWT_SECRET=jwt-from-dot-env\n")
    for cfg, expected in ((_config(), None), (_config(env_file), ("from-dot-env", "jwt-from-dot-env"))):
        services = {n: s for n, s in cfg["services"].items() if n in AIRFLOW_SERVICES}
        for key in SHARED_SECRETS:
            values = {s["environment"][key] for s in services.values()}
            assert len(values) == 1 and "" not in values, (key, values)
        if expected:
            env = services["airflow-apiserver"]["environment"]
            assert (env["AIRFLOW__API__SECRET_KEY"], env["AIRFLOW__API_AUTH__JWT_SECRET"]) == expected
        logs = {next(v["source"] for v in s["volumes"] if v["target"] == "/opt/airflow/logs")
                for s in services.values()}
        assert logs == {"airflow-logs"}
        for s in services.values():
            env = s["environment"]
            assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "8793"
            assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "8794"
        # task instances record the hostname of the container that ran them; the api-server
        # must be able to resolve it on the compose network
        assert services["airflow-scheduler"]["hostname"] == "airflow-scheduler"
        assert services["airflow-triggerer"]["hostname"] == "airflow-triggerer"


def test_the_admin_password_comes_from_env_through_the_auth_volume(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("AIRFLOW_ADMIN_PASSWORD=not-admin\n")
    services = _config(env_file)["services"]
    init = services["airflow-init"]
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"] == "not-admin"
    script = init["command"][-1]
    assert script.index("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE") < script.index("airflow db migrate")
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith("/opt/airflow/auth/")
        if name != "airflow-init":
            assert "AIRFLOW_ADMIN_PASSWORD" not in env


def test_env_example_covers_every_variable_the_compose_file_reads():
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (ROOT / "docker-compose.yaml").read_text()))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert used <= documented, used - documented
    assert _compose("--env-file", str(ROOT / ".env.example"), "config", "-q").returncode == 0


def test_the_image_installs_the_package_editable():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    copies = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY"))
    for path in ("pyproject.toml", "requirements.txt", "constraints.txt", "src/", "/opt/metrics-layer/"):
        assert path in copies, path
    assert "pip install --no-cache-dir -r requirements.txt -c constraints.txt" in dockerfile
    assert "pip install --no-cache-dir --no-deps -e /opt/metrics-layer" in dockerfile
    assert "USER root" not in dockerfile  # pip as the image's airflow user
    assert ".local/" in (ROOT / ".dockerignore").read_text().split()
