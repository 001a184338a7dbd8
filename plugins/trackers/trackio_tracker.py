"""trackio tracker (``run.trackers=[tensorboard,trackio]``; ``pip install "alignfw[trackio]"``).

trackio (Hugging Face's local-first, wandb-compatible tracker) keeps runs in a local database
(``TRACKIO_DIR``) and shows them with ``trackio show``. One trackio run per alignfw run in project
``run.project``, named after the run directory; the resolved config is the run's config; each
step's scalars are logged at that step.
"""

from __future__ import annotations

import os
from typing import Any

from alignfw.hookspecs import hookimpl
from alignfw.plugins.trackers import project, require, sample_table, scalars, selected

TRACKER = "trackio"
_state: dict[str, Any] = {}


@hookimpl
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    _finish()
    if not selected(config, TRACKER):
        return
    trackio = require("trackio", TRACKER, "trackio")
    _state["run"] = trackio.init(project=project(config), name=os.path.basename(os.path.normpath(run_dir)), config=config)


@hookimpl
def on_step_end(step: int, metrics: dict[str, float]) -> None:
    if "run" in _state:
        import trackio

        trackio.log(scalars(metrics), step=step)


@hookimpl
def on_samples(step: int, samples: list[dict[str, Any]]) -> None:
    if "run" in _state and samples:
        import trackio

        columns, rows = sample_table(samples)
        trackio.log({"samples": trackio.Table(columns=columns, data=rows)}, step=step)


@hookimpl
def on_run_end(run_dir: str, metrics: dict[str, float]) -> None:
    _finish()


def _finish() -> None:
    if _state.pop("run", None) is not None:
        import trackio

        trackio.finish()
