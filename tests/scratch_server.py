"""A PostgreSQL server of a test's own, for tests that restart the server or change
cluster-wide objects (roles) and so must not disturb the shared embedded server that other test
sessions use at the same time."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import PG_VERSION, TEST_HOME
from metrics_layer import local


@contextmanager
def scratch_server(*databases: str) -> Iterator:
    """Start a fresh server with `databases` (UTC, entity on the search path); stop and delete
    it on exit. Its data directory is under .local/test, not under pytest's tmp_path: every
    pytest session that starts resets /tmp/pytest-of-<user> to mode 0700, which locks the
    server's unprivileged user (pgserver, when run as root) out of its data directory, so a
    (re)start fails whenever another session starts meanwhile."""
    base = Path(tempfile.mkdtemp(prefix="scratch-pg-", dir=TEST_HOME))
    try:
        server = local.embedded_server(pgdata=base / "pg", version=PG_VERSION)
        try:
            for db in databases:
                local.ensure_database(server, db)
            yield server
        finally:
            server.stop()
            server.cleanup()
            # stopped: no postmaster.pid, no socket (the stopped postmaster may linger as a
            # zombie when the container's init does not reap it, so its process is no evidence)
            assert not (server.pgdata / "postmaster.pid").exists()
            assert not (Path(local.socket_dir(server)) / ".s.PGSQL.5432").exists()
    finally:
        shutil.rmtree(base)
