"""The Hugging Face causal-LM model plugin (``model=hf_causal_lm``; preset ``model=tiny``).

Loads any local ``AutoModelForCausalLM`` directory (a hub id works where a network exists) with
its tokenizer, through ``from_pretrained`` and safetensors only: ``use_safetensors=True`` refuses
pickled ``.bin`` weights, and remote code runs only when ``trust_remote_code`` is set.
``path: builtin:tiny`` is the tiny GPT-2 shipped inside alignfw (``plugins/models/tiny``).
``chat_template`` sets the tokenizer's chat template (conversational data is rendered with it).
``lora.*`` trains LoRA adapters instead of every weight (:mod:`alignfw.models.adapters`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignfw.checkpoint import check_safetensors
from alignfw.config import option
from alignfw.exceptions import ConfigError
from alignfw.hookspecs import hookimpl
from alignfw.models import CausalLM, enable_checkpointing, native_tokenizer, parse_dtype, resolve_model_path
from alignfw.models.adapters import LoraOptions
from alignfw.registry import BuildContext

__all__ = ["HFModelConfig", "build_hf_model", "load_chat_template"]


@dataclass
class HFModelConfig:
    """Options of a Hugging Face causal LM."""

    path: str = "builtin:tiny"  #: local directory, hub id, or builtin:<name> (builtin: tiny)
    tokenizer: str | None = None  #: tokenizer directory if not ``path``
    #: dtype of the parameters, i.e. the optimizer's master weights: auto (= float32), float32,
    #: bfloat16, float16. Keep float32 to train: AdamW's small updates vanish in 16-bit weights.
    dtype: str = "auto"
    #: compute precision: auto (bf16 on a CUDA device that supports it, else fp32), fp32, bf16 or fp16
    #: (autocast: 16-bit matmuls, fp32 master weights and optimizer state, the frozen reference in
    #: 16 bits; fp16 adds dynamic loss scaling)
    precision: str = option("auto", choices=("auto", "fp32", "bf16", "fp16"))
    max_length: int | None = option(None, ge=1)  #: longest prompt + response scored (None: the model's context)
    max_prompt_length: int | None = option(None, ge=1)  #: longest prompt sampled from (None: what max_length leaves)
    attn_implementation: str | None = None  #: eager, sdpa, alignfw (the fused Triton kernel), ...
    #: encode/decode rollouts with alignfw's Rust BPE when the tokenizer is byte-level BPE
    #: (GPT-2, Llama 3, Qwen2 families); other families always use Hugging Face's tokenizer
    fast_tokenizer: bool = True
    #: a Jinja chat template (a file path, or the template text) for models whose tokenizer has
    #: none or a wrong one; saved with the model. Conversational data needs a template.
    chat_template: str | None = None
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    revision: str | None = None
    #: LoRA adapters (``peft``; ``pip install "alignfw[lora]"``): ``model.lora.enabled=true model.lora.r=8``;
    #: the reference is the model with adapters disabled, and final/ holds the adapter (+ merged/ with merge)
    lora: LoraOptions = field(default_factory=LoraOptions)


def build_hf_model(cfg: HFModelConfig, ctx: BuildContext | None = None) -> CausalLM:
    """Load the model and tokenizer and wrap them in :class:`alignfw.models.CausalLM`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(ctx.device if ctx is not None and ctx.device is not None else "cpu")
    path = resolve_model_path(cfg.path)
    dtype = torch.float32 if cfg.dtype == "auto" else parse_dtype(cfg.dtype, device)
    if dtype != torch.float32:
        warnings.warn(
            f"model.dtype={cfg.dtype}: the parameters AdamW updates are {dtype}, which loses updates smaller than "
            f"{torch.finfo(dtype).eps / 2:.0e} of a weight; to train, keep model.dtype=float32 and set model.precision=bf16",
            stacklevel=2,
        )
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    kwargs = dict(dtype=dtype, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    if cfg.attn_implementation:
        if cfg.attn_implementation == "alignfw":
            from alignfw.ops.attention import register_attention

            register_attention()
        kwargs["attn_implementation"] = cfg.attn_implementation
    tok_path = resolve_model_path(cfg.tokenizer) if cfg.tokenizer else path
    if Path(path).is_dir():  # a damaged weights file is named here, not deep inside transformers
        check_safetensors(sorted(Path(path).glob("*.safetensors")), f"re-download or re-save the model in model.path={cfg.path!r}")
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
        tok = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=cfg.trust_remote_code)
    except OSError as e:
        raise ConfigError(f"could not load model.path={cfg.path!r}: {e}".strip()) from e
    if cfg.chat_template:
        tok.chat_template = load_chat_template(cfg.chat_template)
    if cfg.gradient_checkpointing:
        enable_checkpointing(lm)
    fast = native_tokenizer(tok) if cfg.fast_tokenizer else None
    return CausalLM(
        lm, tok, device, fast, precision=precision, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length, lora=cfg.lora
    )


def load_chat_template(value: str, option: str = "model.chat_template") -> str:
    """The template text of ``value``: a file's contents (``.jinja`` or any text file), or ``value``
    itself when it is template text (it contains ``{{`` or ``{%``). The template must parse.

    Raises:
        ConfigError: The file does not exist or the template has a syntax error, naming ``option``.
    """
    if "{{" in value or "{%" in value:
        text, origin = value, "the given text"
    else:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{option}={value!r} is not a file (looked for {path.resolve()}); give the path of a Jinja chat template "
                "file, e.g. chat_template.jinja"
            )
        text, origin = path.read_text(encoding="utf-8"), str(path)
    import jinja2

    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(f"{option}: the chat template in {origin} does not parse ({e.message} at line {e.lineno}); fix the template") from None
    return text


@hookimpl
def register_models(register):
    register("hf_causal_lm", build_hf_model, config=HFModelConfig)
