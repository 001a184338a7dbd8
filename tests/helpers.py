"""Helpers shared by test modules (importable because pyproject sets pythonpath = ["tests"])."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600, python: str | None = None) -> subprocess.CompletedProcess:
    """``python -m alignfw ARGS`` in ``cwd`` with entry-point discovery on."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNFW_")}
    e.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"})
    e.update(env or {})
    return subprocess.run(
        [python or sys.executable, "-m", "alignfw", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )


def demo_trainer(
    reg, run_dir: Path, algo_name: str, *, seed: int = 0, algo: dict | None = None, data: dict | None = None,
    reward: str | None = "bleu", preset: bool = True, model: dict | None = None, **run,
):
    """A pipeline ``Trainer`` for ``algo_name`` on the tiny model and task, with the shipped preset
    ``conf/preset/tiny_<algo>.yaml`` (its ``algo.*`` and ``data.*`` values; ``preset=False``: the
    dataclass defaults) under the ``algo``/``data`` overrides; ``model``: options of ``hf_causal_lm``."""
    from omegaconf import OmegaConf

    from alignfw._hydra import named_config
    from alignfw.config import AlignfwConfig
    from alignfw.pipeline import Trainer

    path = REPO / "conf" / "preset" / f"tiny_{algo_name}.yaml"
    tuned = OmegaConf.to_container(OmegaConf.load(path)) if preset and path.exists() else {}
    cfg = AlignfwConfig(seed=seed, device="cpu")
    cfg.model = named_config(reg.get("model", "hf_causal_lm").config, "hf_causal_lm")(**(model or {}))
    cfg.data = named_config(reg.get("data", "tiny_task").config, "tiny_task")(**{**tuned.get("data", {}), **(data or {})})
    if reward is not None:
        cfg.reward = named_config(reg.get("reward", reward).config, reward)()
    cfg.algo = named_config(reg.get("algorithm", algo_name).config, algo_name)(**{**tuned.get("algo", {}), **(algo or {})})
    cfg.run.progress = False
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return Trainer(cfg, run_dir)
