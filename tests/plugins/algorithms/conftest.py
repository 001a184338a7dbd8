"""Fixtures for the algorithm tests: the built-in plugins plus the offline algorithms, and a
factory for a pipeline ``Trainer`` on the tiny model and the tiny task."""

from __future__ import annotations

import importlib

import pytest

from conftest import builtin_modules

OFFLINE = [
    "alignfw.plugins.algorithms.sft",
    "alignfw.plugins.algorithms.sft_ranking",
    "alignfw.plugins.algorithms.reward_model",
    "alignfw.plugins.algorithms.dpo",
]


@pytest.fixture
def offline_plugins(use_plugins):
    """The built-in plugins and the offline algorithms (whatever pyproject's entry points list yet)."""
    mods = dict.fromkeys(builtin_modules() + OFFLINE)  # ordered, without duplicates
    return use_plugins(*[importlib.import_module(m) for m in mods])


@pytest.fixture
def make_trainer(offline_plugins, tmp_path):
    """``make_trainer(algo, kind, algo_kwargs, **run)``: a Trainer on the tiny model and ``data.kind=kind``."""
    from alignfw._hydra import named_config
    from alignfw.config import AlignfwConfig
    from alignfw.pipeline import Trainer

    reg = offline_plugins

    def make(algo: str, kind: str, algo_kwargs: dict | None = None, *, data: dict | None = None, seed: int = 0, **run) -> Trainer:
        cfg = AlignfwConfig(seed=seed, device="cpu")
        cfg.model = named_config(reg.get("model", "hf_causal_lm").config, "hf_causal_lm")()
        cfg.data = named_config(reg.get("data", "tiny_task").config, "tiny_task")(kind=kind, **(data or {}))
        cfg.algo = named_config(reg.get("algorithm", algo).config, algo)(**(algo_kwargs or {}))
        cfg.run.progress = False
        for k, v in run.items():
            setattr(cfg.run, k, v)
        return Trainer(cfg, tmp_path / f"run-{algo}-{kind}")

    return make


@pytest.fixture
def compose_offline(offline_plugins):
    """``hydra_compose`` with the offline algorithms registered: ``compose(*overrides) -> AlignfwConfig``."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from alignfw._hydra import register_plugin_configs
    from alignfw.cli import normalize_overrides

    register_plugin_configs(offline_plugins)
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="alignfw.conf", version_base="1.3"):
        yield lambda *ov: OmegaConf.to_object(compose("config", overrides=normalize_overrides(list(ov))))
    GlobalHydra.instance().clear()
