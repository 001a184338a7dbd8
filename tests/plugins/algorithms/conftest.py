"""Fixtures for the algorithm tests: a pipeline ``Trainer`` on the tiny model and the tiny task."""

from __future__ import annotations

import pytest
from helpers import demo_trainer


@pytest.fixture
def make_trainer(builtin_plugins, tmp_path):
    """``make_trainer(algo, kind, algo_kwargs, **run)``: a Trainer on the tiny model and ``data.kind=kind``,
    with the algorithm's dataclass defaults (no preset) under ``algo_kwargs``."""

    def make(algo: str, kind: str, algo_kwargs: dict | None = None, *, data: dict | None = None, seed: int = 0, **run):
        return demo_trainer(
            builtin_plugins, tmp_path / f"run-{algo}-{kind}", algo, seed=seed, algo=algo_kwargs,
            data={"kind": kind, **(data or {})}, reward=None, preset=False, **run,
        )

    return make
