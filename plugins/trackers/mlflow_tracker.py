"""MLflow tracker (``run.trackers=[tensorboard,mlflow]``; ``pip install "alignfw[mlflow]"``).

One MLflow run per alignfw run in experiment ``run.project``, named after the run directory, at
MLflow's tracking URI (``MLFLOW_TRACKING_URI``: ``sqlite:///mlflow.db``, a server, or
``file:/path/mlruns`` with ``MLFLOW_ALLOW_FILE_STORE=true``). The resolved config is logged once:
every option as a parameter (``algo.lr``) and the whole as the artifact ``config.json``; each
step's scalars are metrics at that step (``reward/mean``, ``lr``); each evaluation's samples are
the table artifact ``samples/step_<step>.json`` (MLflow's table format: columns and data).
"""

from __future__ import annotations

import os
from typing import Any

from alignfw.exceptions import ConfigError
from alignfw.plugins.trackers import Tracker, flat_params, project, run_name

TRACKER = "mlflow"
#: MLflow refuses parameter values longer than this (characters)
_MAX_PARAM = 6000


def _start(mlflow: Any, run_dir: str, config: dict[str, Any]) -> Any:
    try:
        mlflow.set_experiment(project(config))
        run = mlflow.start_run(run_name=run_name(run_dir))
    except mlflow.exceptions.MlflowException as e:  # a tracking URI MLflow cannot use
        raise ConfigError(
            f"MLflow cannot start a run at tracking URI {mlflow.get_tracking_uri()!r}: {str(e).splitlines()[0]} "
            "Set MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db, or file:/path/mlruns with MLFLOW_ALLOW_FILE_STORE=true)"
        ) from None
    mlflow.log_params({k: str(v)[:_MAX_PARAM] for k, v in flat_params(config).items()})
    mlflow.log_dict(config, "config.json")
    mlflow.set_tag("alignfw.run_dir", os.path.abspath(run_dir))
    return run


def _log(run: Any, step: int, values: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics(values, step=step)


def _table(run: Any, step: int, columns: list[str], rows: list[list[Any]]) -> None:
    import mlflow

    mlflow.log_dict({"columns": columns, "data": rows}, f"samples/step_{step:06d}.json")  # what log_table writes, without pandas


def _finish(run: Any) -> None:
    import mlflow

    mlflow.end_run()


tracker = Tracker(TRACKER, library="mlflow", start=_start, log=_log, table=_table, finish=_finish)
on_run_start, on_step_end, on_samples, on_run_end = tracker.on_run_start, tracker.on_step_end, tracker.on_samples, tracker.on_run_end
