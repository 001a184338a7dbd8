"""Weights & Biases tracker (``run.trackers=[tensorboard,wandb]``; ``pip install "alignfw[wandb]"``).

One W&B run per alignfw run, its files under the run directory (``<run_dir>/wandb``), named after
the run directory, in project ``run.project``; the resolved config is the run's config, each
step's scalars are logged at that step. ``WANDB_MODE=offline`` keeps everything local
(``wandb sync <run_dir>/wandb/offline-run-*`` uploads it later).
"""

from __future__ import annotations

import os
from typing import Any

from alignfw.hookspecs import hookimpl
from alignfw.plugins.trackers import project, require, sample_table, scalars, selected

TRACKER = "wandb"
_state: dict[str, Any] = {}


@hookimpl
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    _finish()
    if not selected(config, TRACKER):
        return
    wandb = require("wandb", TRACKER, "wandb")
    _state["run"] = wandb.init(
        project=project(config), name=os.path.basename(os.path.normpath(run_dir)), dir=run_dir, config=config, reinit="finish_previous"
    )


@hookimpl
def on_step_end(step: int, metrics: dict[str, float]) -> None:
    run = _state.get("run")
    if run is not None:
        run.log(scalars(metrics), step=step)


@hookimpl
def on_samples(step: int, samples: list[dict[str, Any]]) -> None:
    run = _state.get("run")
    if run is not None and samples:
        import wandb

        columns, rows = sample_table(samples)
        run.log({"samples": wandb.Table(columns=columns, data=rows)}, step=step)


@hookimpl
def on_run_end(run_dir: str, metrics: dict[str, float]) -> None:
    _finish()


def _finish() -> None:
    run = _state.pop("run", None)
    if run is not None:
        run.finish()
