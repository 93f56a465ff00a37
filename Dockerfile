# Airflow 3.3.2 with the metrics layer's pinned dependencies (used by docker-compose.yaml).
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt constraints.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/constraints.txt
