"""Built-in loggers: ``metrics.jsonl`` and ``samples.jsonl`` always, TensorBoard events when ``run.trackers`` names
``tensorboard`` (the default) and ``tensorboard`` is installed.

They use the lifecycle hooks (``on_run_start``, ``on_step_end``, ``on_run_end``) exactly as the
other trackers (:mod:`alignfw.plugins.trackers`: Weights & Biases, MLflow, trackio) do. TensorBoard
gets the resolved config once, as the text ``config`` (YAML) at step 0, and the sample
completions of each evaluation as the text ``samples`` (a Markdown table) at that step. ``on_run_start`` also
checks ``run.trackers``: a name no loaded plugin answers to (a plugin declares its name in a
module attribute ``TRACKER``) is an error listing the known ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from alignfw.exceptions import ConfigError
from alignfw.hookspecs import hookimpl
from alignfw.plugins.trackers import sample_table, selected

TRACKER = "tensorboard"
_state: dict[str, Any] = {}


@hookimpl(tryfirst=True)  # an unknown tracker fails before any tracker opened a run
def on_run_start(run_dir: str, config: dict[str, Any]) -> None:
    _close()
    check_trackers(config)
    _state["jsonl"] = open(Path(run_dir) / "metrics.jsonl", "a", buffering=1)
    _state["samples"] = Path(run_dir) / "samples.jsonl"
    if not selected(config, TRACKER):
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return
    tb = _state["tb"] = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
    if config:
        from omegaconf import OmegaConf

        # indented four spaces: TensorBoard renders text as Markdown, and this keeps the YAML verbatim
        text = "\n".join("    " + line for line in OmegaConf.to_yaml(OmegaConf.create(config)).splitlines())
        tb.add_text("config", text, 0)


def check_trackers(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for a ``run.trackers`` entry that no loaded plugin answers to."""
    import difflib

    from alignfw.registry import get_plugin_manager

    wanted = (config.get("run") or {}).get("trackers") or []
    if isinstance(wanted, str):
        raise ConfigError(f"run.trackers={wanted!r} must be a list, e.g. run.trackers=[{wanted}]")
    known = sorted({t for p in get_plugin_manager().get_plugins() if isinstance(t := getattr(p, "TRACKER", None), str)} | {TRACKER})
    for name in wanted:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"run.trackers names {name!r}, which no installed plugin provides; known trackers: {', '.join(known)}.{hint}")


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
def on_samples(step: int, samples: list[dict[str, Any]]) -> None:
    path = _state.get("samples")
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps({"step": step, **s}, ensure_ascii=False) + "\n")
    tb = _state.get("tb")
    if tb is not None and samples:
        tb.add_text("samples", samples_markdown(samples), step)


def samples_markdown(samples: list[dict[str, Any]]) -> str:
    """The samples as a Markdown table (TensorBoard's text plugin renders it)."""
    columns, rows = sample_table(samples)

    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


@hookimpl
def on_run_end(run_dir: str, metrics: dict[str, float]) -> None:
    _close()


def _close() -> None:
    _state.pop("samples", None)
    for key in ("jsonl", "tb"):
        obj = _state.pop(key, None)
        if obj is not None:
            obj.close()
