"""Sequence classifiers with one output: learned reward models.

One way to read ``prompt + response``, shared by the reward-model reward (scoring) and the
reward-model trainer (training), so a trained model scores exactly as it was trained: no special
tokens added, right padding (positions of real tokens do not depend on padding), truncation on
the left to ``max_length`` (the end of the response is what is judged); the score is the single
logit at the last real token (``AutoModelForSequenceClassification`` finds it from ``pad_token_id``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from alignfw.exceptions import ConfigError
from alignfw.models.adapters import is_peft_model
from alignfw.models.loading import parse_dtype, resolve_model_path

__all__ = ["checkpointing", "enable_checkpointing", "classifier_from_policy", "load_classifier", "score_sequences"]


def _prepare_tokenizer(tok: Any) -> Any:
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side, tok.truncation_side = "right", "left"
    return tok


def score_sequences(model: nn.Module, tokenizer: Any, prompts: list[str], responses: list[str], *, max_length: int) -> torch.Tensor:
    """The classifier's score of each ``prompt + response``, float32 ``(b,)``, in one forward.

    ``model`` may be a DDP wrapper of the classifier; differentiable outside ``torch.no_grad``.
    """
    device = next(model.parameters()).device
    texts = [p + r for p, r in zip(prompts, responses)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length).to(device)
    return model(**enc).logits[:, 0].float()


def classifier_from_policy(lm: nn.Module, tokenizer: Any) -> tuple[nn.Module, Any]:
    """A one-output sequence classifier with ``lm``'s backbone weights, and a tokenizer set up for it.

    Built from a copy of ``lm.config`` (``num_labels=1``), its ``base_model`` given ``lm.base_model``'s
    weights, so it equals ``from_pretrained(model_dir, num_labels=1)`` without reading the files again.
    A LoRA policy (``peft`` model) gives its backbone with the adapters folded in; the classifier
    trains whole.
    """
    from transformers import AutoModelForSequenceClassification

    if is_peft_model(lm):
        lm = copy.deepcopy(lm).merge_and_unload()
    tok = _prepare_tokenizer(copy.deepcopy(tokenizer))
    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    config.pad_token_id = tok.pad_token_id
    config.architectures = None  # save_pretrained fills in the classifier's class
    rm = AutoModelForSequenceClassification.from_config(config)
    param = next(lm.parameters())
    rm.to(device=param.device, dtype=param.dtype)
    missing, unexpected = rm.base_model.load_state_dict(lm.base_model.state_dict(), strict=False)
    if missing or unexpected:
        raise ConfigError(f"the policy's backbone does not fit {type(rm).__name__} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if checkpointing(lm):  # model.gradient_checkpointing=true applies to what is trained
        enable_checkpointing(rm)
    return rm, tok


def enable_checkpointing(model: nn.Module) -> None:
    """Turn on gradient (activation) checkpointing of a ``transformers`` model (the name changed in v5)."""
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()


def checkpointing(model: nn.Module) -> bool:
    """Whether gradient (activation) checkpointing is on for a ``transformers`` model (any version)."""
    flag = getattr(type(model), "is_activation_checkpointing", None) or getattr(type(model), "is_gradient_checkpointing", None)
    return bool(flag.fget(model)) if isinstance(flag, property) else False


def load_classifier(path: str, *, dtype: str, device: torch.device, option: str = "reward.path") -> tuple[nn.Module, Any]:
    """A one-output sequence classifier and its tokenizer from a local directory (safetensors only),
    frozen, in eval mode on ``device``. ``option`` is the config key named in errors."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    where = resolve_model_path(path, option)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(where, use_safetensors=True, dtype=parse_dtype(dtype, device))
        tok = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as e:
        raise ConfigError(f"could not load the reward model at {option}={path!r}: {e}") from e
    if model.config.num_labels != 1:
        raise ConfigError(f"{option}={path!r} has {model.config.num_labels} outputs; a reward model has exactly one (num_labels=1)")
    tok = _prepare_tokenizer(tok)
    model.config.pad_token_id = tok.pad_token_id
    model.to(device).eval().requires_grad_(False)
    return model, tok
