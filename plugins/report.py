"""Built-in run report: ``report.html`` in every run directory, written when the run ends.

Plots every metric of ``metrics.jsonl`` over steps (reward, KL, losses and whatever else the
algorithm logs) with the run's config, start → final held-out values and wall time; the page is
built by :mod:`alignfw.report`. Like the loggers, this plugin uses only the lifecycle hooks a
third-party plugin would use. Set ``ALIGNFW_REPORT=0`` to skip the report. A run that never
reached its end has none: ``python -m alignfw.report RUN_DIR`` writes it from what was logged.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from alignfw.exceptions import AlignfwError
from alignfw.hookspecs import hookimpl
from alignfw.report import write_report

#: run directory -> time.monotonic() at on_run_start (a --multirun process runs several in turn)
_started: dict[str, float] = {}


def enabled() -> bool:
    """False when ``ALIGNFW_REPORT`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get("ALIGNFW_REPORT", "1").strip().lower() not in {"0", "false", "no", "off"}


@hookimpl
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    _started[run_dir] = time.monotonic()


@hookimpl(trylast=True)  # after the loggers closed metrics.jsonl
def on_run_end(run_dir: str, metrics: dict[str, float]) -> None:
    start = _started.pop(run_dir, None)
    if not enabled():
        return
    try:
        path = write_report(run_dir, wall_s=None if start is None else time.monotonic() - start)
    except (AlignfwError, OSError) as e:  # the model and metrics are saved; a missing report must not fail the run
        print(f"alignfw: warning: no report.html ({e}); retry with python -m alignfw.report {run_dir}", file=sys.stderr)
        return
    print(f"report: {path}")
