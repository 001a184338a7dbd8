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
from typing import Any, Callable

from alignfw.exceptions import ConfigError
from alignfw.hookspecs import hookimpl

__all__ = ["DEFAULT_TRACKERS", "Tracker", "flat_params", "project", "require", "run_name", "sample_table", "scalars", "selected"]

#: what ``run.trackers`` holds when a config does not say (a pipeline run without a resolved config)
DEFAULT_TRACKERS = ("tensorboard",)


def selected(config: dict[str, Any], name: str) -> bool:
    """Whether ``run.trackers`` of the resolved ``config`` names the tracker ``name``."""
    trackers = (config.get("run") or {}).get("trackers", DEFAULT_TRACKERS)
    return name in (trackers or ())


class Tracker:
    """The lifecycle hooks of one tracker, built from four functions over its library:
    ``start(library, run_dir, config) -> run``, ``log(run, step, scalars)``,
    ``table(run, step, columns, rows)`` and ``finish(run)``. A tracker module binds the hooks of
    one instance as its own module-level hooks (``on_run_start = tracker.on_run_start``, ...)."""

    def __init__(
        self, name: str, *, library: str, start: Callable[..., Any], log: Callable[..., None], table: Callable[..., None],
        finish: Callable[[Any], None],
    ) -> None:  # fmt: skip
        self.name, self.library = name, library
        self._start, self._log, self._table, self._finish = start, log, table, finish
        self.run: Any = None

    @hookimpl
    def on_run_start(self, run_dir: str, config: dict[str, Any]) -> None:
        self.close()  # a --multirun process runs several jobs in turn
        if selected(config, self.name):
            self.run = self._start(require(self.library, self.name, self.name), run_dir, config)

    @hookimpl
    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self._log(self.run, step, scalars(metrics))

    @hookimpl
    def on_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        if self.run is not None and samples:
            self._table(self.run, step, *sample_table(samples))

    @hookimpl
    def on_run_end(self, run_dir: str, metrics: dict[str, float]) -> None:
        self.close()

    def close(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            self._finish(run)


def run_name(run_dir: str) -> str:
    """The tracker run's name: the run directory's (``10-00-00`` of ``outputs/2026-11-23/10-00-00``)."""
    import os

    return os.path.basename(os.path.normpath(run_dir))


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
