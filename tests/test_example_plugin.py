"""The example third-party plugin's algorithm (``best_of_n``), written from alignfw's public modules
only, runs in the pipeline and learns; its installed form is tested in test_packaging.py."""

from __future__ import annotations

import sys

import pytest
import torch
from helpers import REPO, demo_trainer

FIXTURE = REPO / "tests" / "fixtures" / "alignfw-example-plugin"


@pytest.fixture
def example_plugins(use_plugins, monkeypatch):
    import importlib

    from conftest import builtin_modules

    monkeypatch.syspath_prepend(str(FIXTURE))
    mods = [importlib.import_module(m) for m in [*builtin_modules(), "alignfw_example"]]
    yield use_plugins(*mods)
    sys.modules.pop("alignfw_example", None)


def test_best_of_n_trains_on_the_best_sample_and_learns(example_plugins, tmp_path):
    t = demo_trainer(
        example_plugins, tmp_path, "best_of_n", reward="bleu", algo=dict(num_samples=4, lr=2e-3),
        steps=12, batch_size=16, eval_size=32, eval_every=0,
    )  # fmt: skip
    before = [p.detach().clone() for p in t.model.lm.parameters()]
    summary = t.train()
    start, final = summary["start"]["eval/reward"], summary["final"]["eval/reward"]
    assert final > 1.5 * start, (start, final)  # training on the best of 4 samples raises held-out BLEU
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.lm.parameters()))
    stats = t.algo.step(t.train_records[:4])
    assert stats["reward/best"] >= stats["reward/mean"] and stats["grad_norm"] > 0
