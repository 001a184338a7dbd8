"""Shared fixtures. Unit tests build plugin managers by hand (entry points off); the CLI and
packaging tests run subprocesses with discovery on, which exercises the third-party path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def use_plugins(monkeypatch):
    """Install a plugin manager made of exactly the given plugin modules/objects; restored afterwards."""
    from alignfw import registry

    saved = (registry._REGISTRY, registry._PM)
    monkeypatch.setenv("ALIGNFW_DISABLE_PLUGIN_AUTOLOAD", "1")

    def install(*plugins):
        pm = registry.plugin_manager(plugins)
        return registry.set_plugin_manager(pm)

    try:
        yield install
    finally:
        registry._REGISTRY, registry._PM = saved


@pytest.fixture
def builtin_plugins(use_plugins):
    """The built-in plugins, loaded by module path (as their entry points name them)."""
    import importlib

    mods = [importlib.import_module(m) for m in builtin_modules()]
    return use_plugins(*mods)


def builtin_modules() -> list[str]:
    import tomllib

    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["alignfw"]
    return list(eps.values())


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600, python: str | None = None) -> subprocess.CompletedProcess:
    """``python -m alignfw ARGS`` in ``cwd`` with entry-point discovery on."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNFW_")}
    e.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"})
    e.update(env or {})
    return subprocess.run(
        [python or sys.executable, "-m", "alignfw", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )
