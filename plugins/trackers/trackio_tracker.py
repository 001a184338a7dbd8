"""trackio tracker (``run.trackers=[tensorboard,trackio]``; ``pip install "alignfw[trackio]"``).

trackio (Hugging Face's local-first, wandb-compatible tracker) keeps runs in a local database
(``TRACKIO_DIR``) and shows them with ``trackio show``. One trackio run per alignfw run in project
``run.project``, named after the run directory; the resolved config is the run's config; each
step's scalars are logged at that step, each evaluation's samples as the table ``samples``.
"""

from __future__ import annotations

from typing import Any

from alignfw.plugins.trackers import Tracker, project, run_name

TRACKER = "trackio"


def _start(trackio: Any, run_dir: str, config: dict[str, Any]) -> Any:
    return trackio.init(project=project(config), name=run_name(run_dir), config=config)


def _log(run: Any, step: int, values: dict[str, Any]) -> None:
    import trackio

    trackio.log(values, step=step)


def _table(run: Any, step: int, columns: list[str], rows: list[list[Any]]) -> None:
    import trackio

    trackio.log({"samples": trackio.Table(columns=columns, data=rows)}, step=step)


def _finish(run: Any) -> None:
    import trackio

    trackio.finish()


tracker = Tracker(TRACKER, library="trackio", start=_start, log=_log, table=_table, finish=_finish)
on_run_start, on_step_end, on_samples, on_run_end = tracker.on_run_start, tracker.on_step_end, tracker.on_samples, tracker.on_run_end
