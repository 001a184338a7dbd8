"""MLflow tracker (``run.trackers=[tensorboard,mlflow]``; ``pip install "alignfw[mlflow]"``).

One MLflow run per alignfw run in experiment ``run.project``, named after the run directory, at
MLflow's tracking URI (``MLFLOW_TRACKING_URI``; e.g. ``file:/data/mlruns`` for a local store). The
resolved config is logged once: every option as a parameter (``algo.lr``) and the whole as the
artifact ``config.json``; each step's scalars are metrics at that step (``reward/mean``, ``lr``).
"""

from __future__ import annotations

import os
from typing import Any

from alignfw.exceptions import ConfigError
from alignfw.hookspecs import hookimpl
from alignfw.plugins.trackers import flat_params, project, require, sample_table, scalars, selected

TRACKER = "mlflow"
_state: dict[str, Any] = {}
#: MLflow refuses parameter values longer than this (characters)
_MAX_PARAM = 6000


@hookimpl
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    _finish()
    if not selected(config, TRACKER):
        return
    mlflow = require("mlflow", TRACKER, "mlflow")
    try:
        mlflow.set_experiment(project(config))
        run = mlflow.start_run(run_name=os.path.basename(os.path.normpath(run_dir)))
    except mlflow.exceptions.MlflowException as e:  # a tracking URI MLflow cannot use
        raise ConfigError(
            f"MLflow cannot start a run at tracking URI {mlflow.get_tracking_uri()!r}: {str(e).splitlines()[0]} "
            "Set MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db, or file:/path/mlruns with MLFLOW_ALLOW_FILE_STORE=true)"
        ) from None
    _state["run"] = run
    mlflow.log_params({k: str(v)[:_MAX_PARAM] for k, v in flat_params(config).items()})
    mlflow.log_dict(config, "config.json")
    mlflow.set_tag("alignfw.run_dir", os.path.abspath(run_dir))


@hookimpl
def on_step_end(step: int, metrics: dict[str, float]) -> None:
    if "run" in _state:
        import mlflow

        mlflow.log_metrics(scalars(metrics), step=step)


@hookimpl
def on_samples(step: int, samples: list[dict[str, Any]]) -> None:
    if "run" in _state and samples:
        import mlflow

        columns, rows = sample_table(samples)  # MLflow's table artifact format (what log_table writes, without pandas)
        mlflow.log_dict({"columns": columns, "data": rows}, f"samples/step_{step:06d}.json")


@hookimpl
def on_run_end(run_dir: str, metrics: dict[str, float]) -> None:
    _finish()


def _finish() -> None:
    if _state.pop("run", None) is not None:
        import mlflow

        mlflow.end_run()
