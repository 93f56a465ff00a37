"""Where the project's files live. The project root holds dags/, sql/, include/ and src/.

The package is installed editable (`pip install -e .`, as the Makefile and the Dockerfile do), so
the root is two levels above this file; METRICS_LAYER_HOME overrides it (for a non-editable
install, point it at the folder that holds sql/ and include/).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("METRICS_LAYER_HOME") or Path(__file__).resolve().parents[2])
SQL_DIR = ROOT / "sql"
INCLUDE_DIR = ROOT / "include"
REGISTRY_DIR = INCLUDE_DIR / "registry"
EXPECTATIONS_DIR = INCLUDE_DIR / "expectations"
DOCS_DIR = ROOT / "docs"
LOCAL_DIR = ROOT / ".local"
