"""The hand-written ``_native.pyi`` matches the compiled module (pydantic-core's practice)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_native_stubs_match_the_extension(tmp_path):
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "alignfw._native"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
