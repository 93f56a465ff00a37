# Airflow 3.3.2 with the metrics layer installed (used by docker-compose.yaml).
# The package is installed editable from /opt/metrics-layer/src, so compose can mount the working
# tree's src/ (with sql/, include/ and docs/ beside it) over the copy and code changes need no
# rebuild. pip runs as the image's `airflow` user, as the apache/airflow image expects.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 pyproject.toml requirements.txt constraints.txt /opt/metrics-layer/
COPY --chown=airflow:0 src/ /opt/metrics-layer/src/
RUN cd /opt/metrics-layer \
    && pip install --no-cache-dir -r requirements.txt -c constraints.txt \
    && pip install --no-cache-dir --no-deps -e /opt/metrics-layer

# Where docker-compose.yaml keeps the SimpleAuthManager's passwords file (a named volume, which
# takes this directory's owner, `airflow`, when it is first created).
RUN mkdir -p /opt/airflow/auth
