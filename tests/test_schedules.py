"""Learning-rate schedules of the online algorithms: linear warmup, then constant / linear / cosine
over run.steps, stepped once per run step and logged as ``lr``; the default (constant, no warmup)
leaves the learning rate as it was."""

from __future__ import annotations

import json
import math

import pytest

LR = 1e-3
STEPS = 5
RUN = {"run.steps": STEPS, "run.batch_size": 4, "run.eval_size": 0, "run.samples": 0, "rollout.max_new_tokens": 4, "run.progress": False}


def expected(schedule: str, warmup: int, step: int, min_ratio: float = 0.1) -> float:
    """The lr of run step ``step`` (1-based): written out independently of alignfw.optim."""
    k = step - 1
    if k < warmup:
        return LR * (k + 1) / (warmup + 1)
    progress = (k - warmup) / (STEPS - warmup)
    decay = {"constant": None, "linear": 1 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}[schedule]
    return LR if decay is None else LR * (min_ratio + (1 - min_ratio) * decay)


@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo", "reinforce"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_online_algorithms_warm_up_then_decay(builtin_plugins, tmp_path, algo, schedule):
    import alignfw

    alignfw.train(
        algo, reward="bleu", output_dir=tmp_path,
        overrides={**RUN, "algo.lr": LR, "algo.schedule": schedule, "algo.warmup_steps": 2, "algo.min_lr_ratio": 0.1},
    )  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs == pytest.approx([expected(schedule, 2, s) for s in range(1, STEPS + 1)], rel=1e-6)


def test_default_keeps_the_learning_rate(builtin_plugins, tmp_path):
    import alignfw

    alignfw.train("grpo", reward="bleu", output_dir=tmp_path, overrides={**RUN, "algo.lr": LR})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if "lr" in r] == [LR] * STEPS


def test_unknown_schedule_is_named(builtin_plugins, tmp_path):
    import alignfw
    from alignfw.exceptions import ConfigError

    with pytest.raises(ConfigError, match="algo.schedule='cosin' is not a valid choice: must be one of 'cosine', 'linear', 'constant'"):
        alignfw.train("rloo", reward="bleu", output_dir=tmp_path, overrides={**RUN, "algo.schedule": "cosin"})
