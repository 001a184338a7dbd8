"""Built-in loggers: ``metrics.jsonl`` always, TensorBoard events when ``tensorboard`` is installed.

They use the lifecycle hooks (``on_run_start``, ``on_step_end``, ``on_run_end``) exactly as a
third-party logger (Weights & Biases, MLflow) would.

``metrics.jsonl`` holds each step once: a run resumed into its own directory continues the file,
and its first logged step drops the rows of that step and later ones, which the killed run had
logged after its last checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from alignfw.hookspecs import hookimpl

_state: dict[str, Any] = {}


@hookimpl
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    _close()
    _state["jsonl"] = open(Path(run_dir) / "metrics.jsonl", "a", buffering=1)
    _state["first"] = True  # the next row is this run's first
    _state["tb_dir"] = str(Path(run_dir) / "tensorboard")


@hookimpl
def on_step_end(step: int, metrics: dict[str, float]) -> None:
    f = _state.get("jsonl")
    if f is not None:
        if _state.pop("first", False):
            _drop_rows_from(f, step)
            _open_tensorboard(step)
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}
        f.write(json.dumps({"step": step, **clean}) + "\n")
    tb = _state.get("tb")
    if tb is not None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                tb.add_scalar(k, v, step)


@hookimpl
def on_run_end(run_dir: str, metrics: dict[str, float]) -> None:
    _close()


def _open_tensorboard(step: int) -> None:
    """TensorBoard's writer, opened at the first row: ``purge_step`` hides the events a stopped run
    had written from ``step`` on (TensorBoard's own way to resume), as metrics.jsonl drops its rows."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return
    _state["tb"] = SummaryWriter(log_dir=_state.pop("tb_dir"), purge_step=step)


def _drop_rows_from(f: Any, step: int) -> None:
    """Cut the open ``metrics.jsonl`` before its first row of ``step`` or later (rows are in step order)."""
    size = 0
    with open(f.name, "rb") as old:
        for line in old:
            try:
                logged = json.loads(line).get("step")
            except (ValueError, AttributeError):
                logged = None
            if isinstance(logged, int) and logged >= step:
                f.truncate(size)
                return
            size += len(line)


def _close() -> None:
    _state.pop("first", None)
    _state.pop("tb_dir", None)
    for key in ("jsonl", "tb"):
        obj = _state.pop(key, None)
        if obj is not None:
            obj.close()
