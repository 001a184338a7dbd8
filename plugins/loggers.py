"""Built-in loggers: ``metrics.jsonl`` and ``samples.jsonl`` always, TensorBoard events when ``run.trackers`` names
``tensorboard`` (the default) and ``tensorboard`` is installed.

They use the lifecycle hooks (``on_run_start``, ``on_step_end``, ``on_run_end``) exactly as the
other trackers (:mod:`alignfw.plugins.trackers`: Weights & Biases, MLflow, trackio) do. TensorBoard
gets the resolved config once, as the text ``config`` (YAML) at the run's first step, and the sample
completions of each evaluation as the text ``samples`` (a Markdown table) at that step. ``on_run_start`` also
checks ``run.trackers``: a name no loaded plugin answers to (a plugin declares its name in a
module attribute ``TRACKER``) is an error listing the known ones.

``metrics.jsonl`` and ``samples.jsonl`` hold each step once: a run resumed into its own directory
continues the files, and its first logged step drops the rows of that step and later ones, which
the killed run had logged after its last checkpoint (TensorBoard likewise, with ``purge_step``).
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
    _state["first"] = True  # the next row (metrics or samples) is this run's first
    if selected(config, TRACKER):
        _state["tb_dir"], _state["tb_config"] = str(Path(run_dir) / "tensorboard"), config


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


def _begin(step: int) -> None:
    """At this run's first row: drop what a stopped run had logged from ``step`` on, open TensorBoard."""
    if _state.pop("first", False):
        for path in (Path(_state["jsonl"].name), _state["samples"]):
            _drop_rows_from(path, step)
        _open_tensorboard(step)


@hookimpl
def on_step_end(step: int, metrics: dict[str, float]) -> None:
    f = _state.get("jsonl")
    if f is not None:
        _begin(step)
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
        _begin(step)
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


def _open_tensorboard(step: int) -> None:
    """TensorBoard's writer, opened at the first row: ``purge_step`` hides the events a stopped run
    had written from ``step`` on (TensorBoard's own way to resume), as the JSONL files drop their rows."""
    if "tb_dir" not in _state:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return
    tb = _state["tb"] = SummaryWriter(log_dir=_state.pop("tb_dir"), purge_step=step)
    config = _state.pop("tb_config", None)
    if config:
        from omegaconf import OmegaConf

        # indented four spaces: TensorBoard renders text as Markdown, and this keeps the YAML verbatim
        text = "\n".join("    " + line for line in OmegaConf.to_yaml(OmegaConf.create(config)).splitlines())
        tb.add_text("config", text, step)


def _drop_rows_from(path: Path, step: int) -> None:
    """Cut the JSONL file ``path`` before its first row of ``step`` or later (rows are in step order)."""
    if not path.exists():
        return
    size = 0
    with open(path, "rb+") as f:
        for line in f:
            try:
                logged = json.loads(line).get("step")
            except (ValueError, AttributeError):
                logged = None
            if isinstance(logged, int) and logged >= step:
                f.truncate(size)
                return
            size += len(line)


def _close() -> None:
    for key in ("samples", "first", "tb_dir", "tb_config"):
        _state.pop(key, None)
    for key in ("jsonl", "tb"):
        obj = _state.pop(key, None)
        if obj is not None:
            obj.close()
