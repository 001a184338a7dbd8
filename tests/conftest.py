"""Shared fixtures. Unit tests build plugin managers by hand (entry points off); the CLI and
packaging tests run subprocesses with discovery on, which exercises the third-party path."""

from __future__ import annotations

import pytest

from helpers import REPO


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
