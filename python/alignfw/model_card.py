"""The model card (``README.md``) written beside each saved model (``final/``, ``best/``): what it was
trained from and with, and how it scored. Its YAML header is the Hugging Face Hub's model-card
metadata, so the folder can be uploaded as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

__all__ = ["model_card", "write_model_card"]


def _name(node: Any) -> str | None:
    return node.get("_name_") if isinstance(node, Mapping) else None


def _options(node: Any, limit: int = 8) -> str:
    """The first ``limit`` scalar options of a config node, ``key=value`` (the full config is in the run's config.yaml)."""
    if not isinstance(node, Mapping):
        return ""
    items = [f"{k}={v}" for k, v in node.items() if k != "_name_" and isinstance(v, (int, float, str, bool)) and v != ""]
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def _base_model(model: Mapping[str, Any]) -> tuple[str, str | None]:
    """The base model as the card's text and as Hub metadata (None: not a model outside alignfw)."""
    path = str(model.get("path") or "") if isinstance(model, Mapping) else ""
    if not path or path.startswith("builtin:"):
        return f"alignfw's built-in model `{path.removeprefix('builtin:') or _name(model) or '?'}`", None
    return f"`{path}`", path


def model_card(
    *, config: Mapping[str, Any], metrics: Mapping[str, float], step: int, title: str, lora: bool = False, version: str = ""
) -> str:
    """The card's Markdown. ``config``: the run's resolved config; ``metrics``: the held-out metrics
    of the saved model (at ``step``); ``lora``: the folder holds a peft adapter."""
    model, algo, reward, data = (config.get(k) or {} for k in ("model", "algo", "reward", "data"))
    algo_name = _name(algo) or "?"
    base, base_id = _base_model(model)
    reward_text = "none"
    if reward:
        parts = [_name(p) or str(p) for p in reward.get("parts", [])] if isinstance(reward.get("parts"), list) else []
        reward_text = f"`{_name(reward)}`" + (f" of {', '.join(parts)}" if parts else "") + (f" ({_options(reward)})" if _options(reward) else "")
    data_text = f"`{_name(data) or '?'}`" + (f" ({_options(data)})" if _options(data) else "")
    run = config.get("run") or {}
    header = {"library_name": "peft" if lora else "transformers", "tags": ["alignfw", algo_name]}
    if base_id:
        header["base_model"] = base_id
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in header.items()), "---", "", f"# {title}", ""]
    lines += [
        f"Trained with [alignfw](https://pypi.org/project/alignfw/){' ' + version if version else ''}.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | {base} |",
        f"| algorithm | `{algo_name}` ({_options(algo)}) |",
        f"| reward | {reward_text} |",
        f"| data | {data_text} |",
        f"| steps | {step} of {run.get('steps', '?')} (batch {run.get('batch_size', '?')}, seed {config.get('seed', '?')}) |",
        "| weights | " + ("a LoRA adapter (peft) on the base model" if lora else "the full model (safetensors)") + " |",
        "",
    ]
    if metrics:
        lines += [f"Held-out metrics of this model (step {step}):", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in metrics.items() if isinstance(v, (int, float))]
        lines.append("")
    load = (
        'from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained("PATH")'
        if lora
        else 'from transformers import AutoModelForCausalLM, AutoTokenizer\nmodel = AutoModelForCausalLM.from_pretrained("PATH")\n'
        'tokenizer = AutoTokenizer.from_pretrained("PATH")'
    )
    lines += ["Load it:", "", "```python", load, "```", "", "The run's full configuration is its `config.yaml`.", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, **kwargs: Any) -> Path:
    """Write :func:`model_card` to ``folder/README.md`` (an existing card, e.g. a base model's, is replaced)."""
    path = Path(folder) / "README.md"
    path.write_text(model_card(**kwargs), encoding="utf-8")
    return path
