"""Helpers shared by test modules (importable because pyproject sets pythonpath = ["tests"])."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600, python: str | None = None) -> subprocess.CompletedProcess:
    """``python -m alignfw ARGS`` in ``cwd`` with entry-point discovery on."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNFW_")}
    e.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"})
    e.update(env or {})
    return subprocess.run(
        [python or sys.executable, "-m", "alignfw", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )
