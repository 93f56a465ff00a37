"""Superset configuration for the local instance (`make superset`, `make test-superset`).

Everything lives under $SUPERSET_HOME (default .local/superset): the SQLite metadata DB, the
data cache and the secret key, which is generated there on first use and never in the repo.
The warehouse password, if the BI role has one, comes from $METRICS_READER_PASSWORD at connect
time (SQLALCHEMY_CUSTOM_PASSWORD_STORE): neither the bundle nor the metadata DB holds it.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

_HOME = Path(os.environ.get("SUPERSET_HOME") or Path(__file__).resolve().parents[2] / ".local" / "superset")
_HOME.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    if os.environ.get("SUPERSET_SECRET_KEY"):
        return os.environ["SUPERSET_SECRET_KEY"]
    path = _HOME / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(42))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
SQLALCHEMY_DATABASE_URI = f"sqlite:///{_HOME / 'superset.db'}?check_same_thread=false"

# The metrics change once a day (the fan-in publishes after midnight UTC): query results are
# cached for a day (each dataset's cache_timeout says so too) and a deployment re-warms them
# after each publication (README, "Superset"). A file cache is shared by the gunicorn workers.
DATA_CACHE_CONFIG = {
    "CACHE_TYPE": "FileSystemCache",
    "CACHE_DIR": str(_HOME / "cache"),
    "CACHE_DEFAULT_TIMEOUT": int(timedelta(days=1).total_seconds()),
    "CACHE_KEY_PREFIX": "superset_data_",
}


def _warehouse_password(url):
    """The BI role's password from the environment, never from the stored URI."""
    return os.environ.get("METRICS_READER_PASSWORD") or url.password


SQLALCHEMY_CUSTOM_PASSWORD_STORE = _warehouse_password

# local http only: no HTTPS redirects or CSP nonces in the way of the test browser
TALISMAN_ENABLED = False
WTF_CSRF_ENABLED = True
SUPERSET_WEBSERVER_TIMEOUT = 120
