"""Weights & Biases tracker (``run.trackers=[tensorboard,wandb]``; ``pip install "alignfw[wandb]"``).

One W&B run per alignfw run, its files under the run directory (``<run_dir>/wandb``), named after
the run directory, in project ``run.project``; the resolved config is the run's config, each
step's scalars are logged at that step, each evaluation's samples as the table ``samples``.
``WANDB_MODE=offline`` keeps everything local (``wandb sync <run_dir>/wandb/offline-run-*``
uploads it later).
"""

from __future__ import annotations

from typing import Any

from alignfw.plugins.trackers import Tracker, project, run_name

TRACKER = "wandb"


def _start(wandb: Any, run_dir: str, config: dict[str, Any]) -> Any:
    return wandb.init(project=project(config), name=run_name(run_dir), dir=run_dir, config=config, reinit="finish_previous")


def _table(run: Any, step: int, columns: list[str], rows: list[list[Any]]) -> None:
    import wandb

    run.log({"samples": wandb.Table(columns=columns, data=rows)}, step=step)


tracker = Tracker(
    TRACKER, library="wandb", start=_start, log=lambda run, step, values: run.log(values, step=step), table=_table,
    finish=lambda run: run.finish(),
)  # fmt: skip
on_run_start, on_step_end, on_samples, on_run_end = tracker.on_run_start, tracker.on_step_end, tracker.on_samples, tracker.on_run_end
