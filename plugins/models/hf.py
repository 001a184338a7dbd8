"""The Hugging Face causal-LM model plugin (``model=hf_causal_lm``; preset ``model=tiny``).

Loads any local ``AutoModelForCausalLM`` directory (a hub id works where a network exists) with
its tokenizer, through ``from_pretrained`` and safetensors only: ``use_safetensors=True`` refuses
pickled ``.bin`` weights, and remote code runs only when ``trust_remote_code`` is set.
``path: builtin:tiny`` is the tiny GPT-2 shipped inside alignfw (``plugins/models/tiny``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alignfw.hookspecs import hookimpl

__all__ = ["HFModelConfig", "build_hf_model", "resolve_model_path"]

BUILTIN = {"tiny": Path(__file__).resolve().parent / "tiny"}


@dataclass
class HFModelConfig:
    """Options of a Hugging Face causal LM."""

    path: str = "builtin:tiny"  #: local directory, hub id, or builtin:<name> (builtin: tiny)
    tokenizer: str | None = None  #: tokenizer directory if not ``path``
    dtype: str = "auto"  #: auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16
    attn_implementation: str | None = None  #: eager, sdpa, alignfw (the fused Triton kernel), ...
    #: encode/decode rollouts with alignfw's Rust BPE when the tokenizer is byte-level BPE
    #: (GPT-2, Llama 3, Qwen2 families); other families always use Hugging Face's tokenizer
    fast_tokenizer: bool = True
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    revision: str | None = None


def resolve_model_path(path: str) -> str:
    from alignfw.exceptions import ConfigError

    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        if name not in BUILTIN:
            raise ConfigError(f"unknown built-in model {path!r}; built-in models: {', '.join('builtin:' + k for k in BUILTIN)}")
        return str(BUILTIN[name])
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ConfigError(
                f"model.path={path!r} is a directory without config.json; point it at a Hugging Face model directory "
                "(the output of save_pretrained)"
            )
        return str(p)
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise ConfigError(f"model.path={path!r} does not exist; give a local model directory, a hub id, or builtin:tiny")
    return path  # a hub id; from_pretrained reports network problems itself


def _dtype(name: str, device):
    import torch

    from alignfw.exceptions import ConfigError

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    try:
        dt = getattr(torch, name)
        assert isinstance(dt, torch.dtype)
        return dt
    except (AttributeError, AssertionError):
        raise ConfigError(f"model.dtype={name!r} is not a dtype; use auto, float32, bfloat16 or float16") from None


def build_hf_model(cfg: HFModelConfig, ctx=None):
    """Load the model and tokenizer and wrap them in :class:`alignfw.models.CausalLM`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignfw.exceptions import ConfigError
    from alignfw.models import CausalLM

    device = torch.device(ctx.device if ctx is not None and ctx.device is not None else "cpu")
    path = resolve_model_path(cfg.path)
    kwargs = dict(dtype=_dtype(cfg.dtype, device), trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    if cfg.attn_implementation:
        if cfg.attn_implementation == "alignfw":
            from alignfw.ops.attention import register_attention

            register_attention()
        kwargs["attn_implementation"] = cfg.attn_implementation
    tok_path = resolve_model_path(cfg.tokenizer) if cfg.tokenizer else path
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
        tok = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=cfg.trust_remote_code)
    except OSError as e:
        raise ConfigError(f"could not load model.path={cfg.path!r}: {e}".strip()) from e
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable()
    return CausalLM(lm, tok, device, fast_tokenizer=_native_tokenizer(tok_path) if cfg.fast_tokenizer else None)


def _native_tokenizer(path: str):
    """alignfw's tokenizer for a local byte-level BPE ``tokenizer.json``, else None (HF is used)."""
    from alignfw.exceptions import TokenizerFormatError
    from alignfw.tokenizer import Tokenizer

    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        return None
    try:
        return Tokenizer.from_file(file)
    except TokenizerFormatError:  # another family (SentencePiece, WordPiece, ...): Hugging Face's
        return None


@hookimpl
def register_models(register):
    register("hf_causal_lm", build_hf_model, config=HFModelConfig)
