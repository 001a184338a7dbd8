"""Finding and loading weights: model paths (local, hub id, ``builtin:``), dtypes, alignfw's
tokenizer for a model directory. Weights load through safetensors only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from alignfw.exceptions import ConfigError, TokenizerFormatError

__all__ = ["BUILTIN_MODELS", "native_tokenizer", "parse_dtype", "resolve_model_path", "save_tokenizer"]

#: ``builtin:<name>`` models shipped inside alignfw (``plugins/models/<name>``)
BUILTIN_MODELS = {"tiny": Path(__file__).resolve().parents[1] / "plugins" / "models" / "tiny"}


def resolve_model_path(path: str, option: str = "model.path") -> str:
    """A local model directory (checked for ``config.json``), a ``builtin:`` model's directory, or a hub id as given.

    ``option``: the config key named in errors.
    """
    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            raise ConfigError(f"unknown built-in model {path!r}; built-in models: {', '.join('builtin:' + k for k in BUILTIN_MODELS)}")
        return str(BUILTIN_MODELS[name])
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ConfigError(
                f"{option}={path!r} is a directory without config.json; point it at a Hugging Face model directory "
                "(the output of save_pretrained)"
            )
        return str(p)
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(f"{option}={path!r} does not exist; give a local model directory, a hub id, or builtin:tiny")
    return path  # a hub id; from_pretrained reports network problems itself


def parse_dtype(name: str, device: torch.device, option: str = "model.dtype") -> torch.dtype:
    """``auto`` (bf16 on a CUDA device that supports it, else fp32) or a torch dtype's name."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ConfigError(f"{option}={name!r} is not a dtype; use auto, float32, bfloat16 or float16")
    return dt


def native_tokenizer(tokenizer: Any):
    """alignfw's Rust tokenizer equivalent to ``tokenizer``, or None (Hugging Face's is used).

    ``tokenizer``: a live Hugging Face fast tokenizer (built from its ``backend_tokenizer``, i.e.
    after transformers' load-time changes such as Llama's ``legacy`` / ``add_prefix_space``), or a
    local directory holding ``tokenizer.json``. None when the tokenizer has no Rust backend or uses
    a component alignfw does not implement.
    """
    from alignfw.tokenizer import Tokenizer

    if isinstance(tokenizer, (str, Path)):
        file = Path(tokenizer) / "tokenizer.json"
        if not file.is_file():
            return None
        text = file.read_text(encoding="utf-8")
    else:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer
            return None
        text = backend.to_str()
    try:
        return Tokenizer.from_str(text)
    except TokenizerFormatError:  # a component alignfw does not implement: Hugging Face's
        return None


def save_tokenizer(tokenizer: Any, path: str | Path) -> None:
    """``tokenizer.save_pretrained(path)``, loadable by every supported transformers version.

    transformers 5 records its ``TokenizersBackend`` class in ``tokenizer_config.json``, a name 4.x
    does not know; ``PreTrainedTokenizerFast`` is the same tokenizer (``tokenizer.json``) under the
    name both know, so a model alignfw saves loads in either.
    """
    tokenizer.save_pretrained(str(path))
    config = Path(path) / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text())
        if data.get("tokenizer_class") == "TokenizersBackend":
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
            data.pop("backend", None)
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
