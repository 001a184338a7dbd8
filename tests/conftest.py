"""Shared fixtures. Unit tests build plugin managers by hand (entry points off); the CLI and
packaging tests run subprocesses with discovery on, which exercises the third-party path."""

from __future__ import annotations

import os

import pytest

# triton.jit decides at decoration time whether a kernel is compiled or interpreted, so without a
# GPU the interpreter must be on before any test imports alignfw.kernels (tests/kernels runs the
# Triton kernels on CPU tensors through it; every other path uses the torch reference on CPU).
if "TRITON_INTERPRET" not in os.environ:
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    except ImportError:  # the tokenizer tests run without torch
        pass

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


@pytest.fixture
def hydra_compose(builtin_plugins):
    """Compose ``conf/config.yaml`` with command-line overrides through the real plugin wiring
    (``+algo=`` spelled as on the command line); returns the ``DictConfig``."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from alignfw._hydra import register_plugin_configs
    from alignfw.cli import normalize_overrides

    register_plugin_configs(builtin_plugins)
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="alignfw.conf", version_base="1.3"):
        yield lambda *ov: compose("config", overrides=normalize_overrides(list(ov)))
    GlobalHydra.instance().clear()


@pytest.fixture
def compose_typed(hydra_compose):
    """Like ``hydra_compose``, converted to the typed ``AlignfwConfig``."""
    from omegaconf import OmegaConf

    return lambda *ov: OmegaConf.to_object(hydra_compose(*ov))
