"""Checkpoints are atomic, pickle-free, and a resumed run continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignfw.checkpoint import find_checkpoint, load_state, save_state
from alignfw.exceptions import CheckpointError


def test_state_round_trip(tmp_path):
    state = {
        "step": 3,
        "opt": {"state": {0: {"exp_avg": torch.randn(3, 2), "step": torch.tensor(4.0)}}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]},
        "rng": torch.get_rng_state(),
        "none": None,
        "nan": float("nan"),
    }
    save_state(tmp_path, state)
    back = load_state(tmp_path)
    assert back["step"] == 3 and back["none"] is None and back["nan"] != back["nan"]
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999) and 0 in back["opt"]["state"]
    assert torch.equal(back["rng"], state["rng"])
    assert json.loads((tmp_path / "state.json").read_text())  # plain JSON, no pickle anywhere


def test_unsupported_objects_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="cannot checkpoint a object"):
        save_state(tmp_path, {"x": object()})


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    save_state(tmp_path, {"w": torch.randn(100, 100)})
    data = (tmp_path / "state.safetensors").read_bytes()
    (tmp_path / "state.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state(tmp_path)


def test_find_checkpoint_errors_name_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="save_every"):
        find_checkpoint(tmp_path)


def _ppo_cfg(reg, out: Path, steps: int, save_every: int, resume: str | None = None):
    from alignfw._hydra import named_config
    from alignfw.config import AlignfwConfig

    cfg = AlignfwConfig(seed=3)
    cfg.model = named_config(reg.get("model", "hf_causal_lm").config, "hf_causal_lm")()
    cfg.data = named_config(reg.get("data", "tiny_task").config, "tiny_task")(n_train=64, n_eval=8)
    cfg.reward = named_config(reg.get("reward", "bleu").config, "bleu")()
    cfg.algo = named_config(reg.get("algorithm", "ppo").config, "ppo")(lr=1e-3, ppo_epochs=1, minibatch_size=4)
    cfg.run.steps, cfg.run.batch_size, cfg.run.save_every, cfg.run.eval_size = steps, 8, save_every, 8
    cfg.run.eval_every, cfg.run.progress, cfg.run.resume = 0, False, resume
    cfg.rollout.max_new_tokens = 8
    return cfg


def test_resumed_run_continues_exactly(builtin_plugins, tmp_path):
    from safetensors.torch import load_file

    from alignfw.pipeline import run

    straight = run(_ppo_cfg(builtin_plugins, tmp_path / "a", 4, 2), tmp_path / "a")
    run(_ppo_cfg(builtin_plugins, tmp_path / "b", 2, 2), tmp_path / "b")
    resumed = run(_ppo_cfg(builtin_plugins, tmp_path / "c", 4, 2, resume=str(tmp_path / "b")), tmp_path / "c")
    wa = load_file(str(tmp_path / "a" / "final" / "model.safetensors"))
    wc = load_file(str(tmp_path / "c" / "final" / "model.safetensors"))
    assert wa.keys() == wc.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wc[k], rtol=0, atol=0, msg=k)
    assert straight["final"] == resumed["final"]
    ma = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mc = [json.loads(l) for l in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("reward/mean") for m in ma if m["step"] > 2] == [m.get("reward/mean") for m in mc if m["step"] > 2]


def test_interrupted_write_keeps_previous_checkpoint(builtin_plugins, tmp_path):
    from alignfw.pipeline import run

    run(_ppo_cfg(builtin_plugins, tmp_path / "r", 2, 2), tmp_path / "r")
    root = tmp_path / "r" / "checkpoints"
    # a crash mid-write leaves a temporary directory that is never mistaken for a checkpoint
    (root / ".tmp_step_00000004_999").mkdir()
    (root / ".tmp_step_00000004_999" / "state.json").write_text("{")
    assert find_checkpoint(tmp_path / "r").name == "step_00000002"
