"""The Python API (``alignfw.train``): the README's script, the CLI's config, reward functions, data
given in Python. Runs are a few steps of the tiny model on CPU."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import pytest

from helpers import REPO, run_cli

TINY = {"run.steps": 1, "run.batch_size": 4, "run.eval_size": 4, "run.eval_every": 0, "rollout.max_new_tokens": 4, "run.progress": False}


def readme_script() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- python-api:script -->\s*```python\n(.*?)```\s*<!-- /python-api:script -->", text, re.S)
    assert block, "README.md lost its <!-- python-api:script --> block"
    return block.group(1)


def test_readme_script_is_about_fifteen_lines():
    assert len(readme_script().strip().splitlines()) <= 16


@pytest.mark.slow
def test_readme_script_runs_as_written(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(readme_script())
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path)}
    env.update({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {})  # a source checkout
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    start, final = map(float, re.search(r"held-out reward ([\d.]+) -> ([\d.]+)$", r.stdout.strip()).groups())
    assert final > start  # the demo learns (0.250 -> 0.833 when it was written)
    (run_dir,) = (tmp_path / "outputs").glob("*/*")  # outputs/<date>/<time>, as the command line
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "reward/mean" in row]
    assert len(steps) == 30
    assert all({"reward/word_accuracy", "reward/brevity"} <= set(row) for row in steps)  # each reward under its own name
    assert (run_dir / "final" / "model.safetensors").exists() and json.loads((run_dir / "summary.json").read_text())["steps"] == 30


def _cli_config(*args: str, cwd) -> dict:
    from omegaconf import OmegaConf

    r = run_cli(*args, "--cfg", "job", "--resolve", cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    return OmegaConf.to_container(OmegaConf.create(r.stdout))


@pytest.mark.parametrize(
    "cli, kwargs",
    [
        (["+algo=ppo", "+reward=bleu", "run.steps=50"], dict(algo="ppo", reward="bleu", overrides=["run.steps=50"])),
        (["+algo=grpo", "+reward=bleu", "algo.lr=0.01"], dict(algo="grpo", reward="bleu", overrides={"algo": {"lr": 0.01}})),
        (["+algo=dpo", "data.kind=preference", "rollout.max_new_tokens=8"],
         dict(algo="dpo", overrides={"data.kind": "preference", "rollout.max_new_tokens": 8})),
    ],
)  # fmt: skip
def test_config_is_the_command_lines(builtin_plugins, tmp_path, cli, kwargs):
    import alignfw

    _, resolved = alignfw.compose_config(**kwargs)
    assert resolved == _cli_config(*cli, cwd=tmp_path)  # same presets, defaults and overrides


def test_a_config_dataclass_is_the_whole_node(builtin_plugins):
    import alignfw
    from alignfw.plugins.algorithms.grpo import GRPOConfig
    from alignfw.plugins.rewards.bleu import BleuConfig

    typed, resolved = alignfw.compose_config(GRPOConfig(lr=0.5), reward=BleuConfig(max_order=2))
    assert type(typed.algo).__name__ == "GRPOConfig" and typed.algo.lr == 0.5
    assert typed.algo.num_generations == GRPOConfig().num_generations  # the object as given, not the tiny preset's 2
    assert resolved["algo"]["_name_"] == "grpo" and resolved["reward"] == {**resolved["reward"], "_name_": "bleu", "max_order": 2}
    assert typed.run.batch_size == 64  # the rest is composed as on the command line


def test_unknown_option_names_the_key_and_close_ones(builtin_plugins):
    import alignfw
    from alignfw.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"unknown option 'algo\.lrr' \(did you mean algo\.lr"):
        alignfw.compose_config("ppo", reward="bleu", overrides={"algo.lrr": 1e-3})
    for spelling in ("algo.lrr=1e-3", "+algo.lrr=1e-3"):
        with pytest.raises(ConfigError, match=r"unknown option 'algo\.lrr' \(did you mean algo\.lr"):
            alignfw.compose_config("ppo", reward="bleu", overrides=[spelling])
    with pytest.raises(ConfigError, match="algo.lr=.*'fast'"):
        alignfw.compose_config("ppo", reward="bleu", overrides={"algo.lr": "fast"})
    with pytest.raises(ConfigError, match="2 weights for 1 rewards"):
        alignfw.compose_config("grpo", reward=[lambda p, c, **k: [0.0] * len(c)], reward_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="unknown reward 'bleuu'.*bleu"):
        alignfw.compose_config("grpo", reward=["bleuu", lambda p, c, **k: [0.0] * len(c)])


def boom(prompts, completions, **columns):
    raise KeyError("answer")


def returns_none(prompts, completions, **columns):
    [0.0 for _ in completions]


def too_short(prompts, completions, **columns):
    return [1.0]


def not_a_number(prompts, completions, **columns):
    return [math.nan] * len(completions)


@pytest.mark.parametrize(
    "fn, message",
    [
        (boom, r"reward function (tests\.)?test_api\.boom raised KeyError: 'answer'"),
        (returns_none, r"reward function (tests\.)?test_api\.returns_none returned None"),
        (too_short, r"reward function (tests\.)?test_api\.too_short returned 1 scores for \d+ completions"),
        (not_a_number, r"reward function (tests\.)?test_api\.not_a_number returned nan at index 0"),
    ],
)
def test_reward_function_errors_name_the_function(builtin_plugins, tmp_path, fn, message):
    import alignfw
    from alignfw.exceptions import AlignfwError, RewardFunctionError

    with pytest.raises(RewardFunctionError, match=message) as info:
        alignfw.train("grpo", reward=fn, overrides=TINY, output_dir=tmp_path)
    assert isinstance(info.value, AlignfwError)
    from alignfw.registry import get_registry

    assert fn.__name__ not in get_registry().names("reward")  # the run's plugin is unregistered, even after an error


def test_data_as_rows_reaches_rewards_as_columns(builtin_plugins, tmp_path):
    import alignfw
    from alignfw.registry import get_registry

    rows = [{"prompt": f"translate: {w} =", "answer": t, "level": i % 2} for i, (w, t) in enumerate([("cat", "nyan"), ("dog", "vauv")] * 4)]
    seen: list[dict] = []

    def exact(prompts, completions, answer, level, **columns):
        seen.append({"prompts": prompts, "answer": answer, "level": level, "extra": sorted(columns)})
        return [float(c.strip() == a) for c, a in zip(completions, answer)]

    summary = alignfw.train(
        "grpo", data=rows, eval_data=rows[:2], reward=[exact, lambda prompts, completions, **_: [0.5] * len(completions)],
        reward_weights=[2.0, 1.0], overrides={**TINY, "run.steps": 2}, output_dir=tmp_path,
    )  # fmt: skip
    assert summary["steps"] == 2 and "eval/reward" in summary["final"]
    for call in seen:  # one keyword list per column, aligned with the prompts
        assert len(call["answer"]) == len(call["prompts"]) == len(call["level"])
        assert all(("cat" in p) == (a == "nyan") for p, a in zip(call["prompts"], call["answer"]))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(m for m in metrics if "reward/mean" in m)
    assert {"reward/exact", "reward/reward_1"} <= set(step)  # a lambda is named by its position
    assert step["reward/reward_1"] == 0.5
    assert "in_memory" not in get_registry().names("data") and "exact" not in get_registry().names("reward")  # unregistered


def test_data_as_a_datasets_dataset(builtin_plugins, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the datasets package is optional (pip install 'alignfw[data]')")
    import alignfw

    ds = datasets.Dataset.from_list([{"question": f"translate: {w} =", "completion": f" {t}"} for w, t in [("cat", "nyan"), ("dog", "vauv")] * 4])
    summary = alignfw.train("sft", data=ds, overrides={**TINY, "data.prompt_key": "question", "data.eval_fraction": 0.25}, output_dir=tmp_path)
    assert summary["steps"] == 1 and "eval/loss" in summary["final"]
    with pytest.raises(alignfw.api.DataError, match="DatasetDict with splits train; pass one split"):
        alignfw.train("sft", data=datasets.DatasetDict({"train": ds}), output_dir=tmp_path)


def test_bad_data_is_named(builtin_plugins, tmp_path):
    import alignfw
    from alignfw.exceptions import DataError

    with pytest.raises(DataError, match="row 2 of data: expected a dict"):
        alignfw.train("sft", data=[{"prompt": "a", "response": "b"}, "oops"], output_dir=tmp_path)
    with pytest.raises(DataError, match=r"row 1 of data: missing column 'prompt' \(columns present: question\)"):
        alignfw.train("sft", data=[{"question": "a"}], output_dir=tmp_path)


def test_composing_inside_a_hydra_app_keeps_its_state(builtin_plugins, tmp_path):
    """A user's own @hydra.main script may call alignfw: its Hydra stays initialised."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    import alignfw

    (tmp_path / "app.yaml").write_text("x: 1\n")
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        typed, _ = alignfw.compose_config("ppo", reward="bleu", overrides=["run.steps=5"])
        assert typed.run.steps == 5
        assert GlobalHydra.instance().is_initialized() and hydra.compose("app").x == 1
