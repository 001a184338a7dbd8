"""Experiment trackers: Weights & Biases, MLflow and trackio, beside the built-in TensorBoard logger.

Each tracker is a plugin module using only the lifecycle hooks (``on_run_start``,
``on_step_end``, ``on_run_end``), exactly as a third-party tracker would, and declares the name it
answers to in ``TRACKER``. ``run.trackers`` selects any of them together
(``run.trackers=[tensorboard,wandb,mlflow]``); the library of a selected tracker is an optional
extra (``pip install "alignfw[wandb]"``) and a missing one is an error naming the extra. Each
logs the resolved config once at the start, every step's scalar metrics (the learning rate as
``lr``), the sample completions of each evaluation as a table (``samples``), and ends its run at
the end. Library settings come from the library's own environment
variables (``WANDB_MODE=offline``, ``WANDB_ENTITY``, ``MLFLOW_TRACKING_URI``, ``TRACKIO_DIR``); the
project / experiment is ``run.project``.
"""

from __future__ import annotations

import math
from typing import Any

from alignfw.exceptions import ConfigError

__all__ = ["DEFAULT_TRACKERS", "flat_params", "project", "require", "sample_table", "scalars", "selected"]

#: what ``run.trackers`` holds when a config does not say (a pipeline run without a resolved config)
DEFAULT_TRACKERS = ("tensorboard",)


def selected(config: dict[str, Any], name: str) -> bool:
    """Whether ``run.trackers`` of the resolved ``config`` names the tracker ``name``."""
    trackers = (config.get("run") or {}).get("trackers", DEFAULT_TRACKERS)
    return name in (trackers or ())


def project(config: dict[str, Any]) -> str:
    """The project / experiment name (``run.project``)."""
    return str((config.get("run") or {}).get("project") or "alignfw")


def require(module: str, tracker: str, extra: str):
    """Import a tracker's library, or fail naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"run.trackers selects {tracker!r} but {module} is not installed ({e}); pip install \"alignfw[{extra}]\", "
            f"or remove {tracker} from run.trackers"
        ) from None


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The nested config as ``{"algo.lr": 1e-3, ...}`` (lists and None as text), for trackers whose
    parameters are flat key-value pairs (MLflow)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a step's metrics."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def sample_table(samples: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the sample completions (``on_samples``): prompt, response, reward, each
    part of a fused reward, length."""
    if not samples:
        return [], []
    parts = list(samples[0].get("rewards", {}))
    has_reward = "reward" in samples[0]
    columns = ["prompt", "response"] + (["reward"] if has_reward else []) + parts + ["length"]
    rows = [
        [s["prompt"], s["response"], *([s["reward"]] if has_reward else []), *(s["rewards"].get(p) for p in parts), s["length"]]
        for s in samples
    ]
    return columns, rows
