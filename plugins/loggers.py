"""Built-in loggers: ``metrics.jsonl`` always, TensorBoard events when ``tensorboard`` is installed.

They use the lifecycle hooks (``on_run_start``, ``on_step_end``, ``on_run_end``) exactly as a
third-party logger (Weights & Biases, MLflow) would.
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
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return
    _state["tb"] = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))


@hookimpl
def on_step_end(step: int, metrics: dict[str, float]) -> None:
    f = _state.get("jsonl")
    if f is not None:
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


def _close() -> None:
    for key in ("jsonl", "tb"):
        obj = _state.pop(key, None)
        if obj is not None:
            obj.close()
