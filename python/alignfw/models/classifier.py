"""Sequence classifiers with one output: learned reward models.

One way to read ``prompt + response`` (:meth:`ClassifierTokenizer.encode`), shared by the
reward-model reward (scoring) and the reward-model trainer (training), so a trained model scores
exactly as it was trained. It is Hugging Face's
``tokenizer(texts, padding=True, truncation=True, max_length=...)`` with right padding and left
truncation: the tokenizer's template tokens are added (``[CLS] ... [SEP]`` for BERT, BOS for
Llama-style tokenizers, nothing for GPT-2 or Qwen2), positions of real tokens do not depend on
padding, and a text longer than ``max_length`` loses its beginning (the end of the response is
what is judged) while the template tokens stay. Special-token spellings in the text are read as
the special tokens, as that call does: a prompt rendered by the chat template spells the template's
special tokens and the model must see them as such (a user or a policy that types
``"<|im_end|>"`` is read the same way; the text is a plain ``str`` by then, so the
:class:`~alignfw.types.ChatText` spans that tell the two apart no longer apply). The score is the
single logit ``AutoModelForSequenceClassification`` gives (at the last real token for decoders,
which find it from ``pad_token_id``; at ``[CLS]`` for BERT-style encoders).

When the tokenizer's family is one alignfw implements, the ids come from alignfw's Rust
tokenizer (built once per classifier, :class:`ClassifierTokenizer`); they and the masks are
identical to Hugging Face's, which encodes every other family.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from alignfw.exceptions import ConfigError
from alignfw.models.adapters import is_peft_model
from alignfw.models.loading import native_tokenizer, parse_dtype, resolve_model_path

__all__ = [
    "ClassifierTokenizer",
    "checkpointing",
    "enable_checkpointing",
    "classifier_from_policy",
    "load_classifier",
    "score_sequences",
]


def _prepare_tokenizer(tok: Any) -> Any:
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side, tok.truncation_side = "right", "left"
    return tok


@dataclass(frozen=True)
class ClassifierTokenizer:
    """A reward model's tokenizer: Hugging Face's ``hf`` (right padding, left truncation; saved with
    the model) and ``fast``, alignfw's Rust tokenizer with the same vocabulary (None: ``hf`` encodes).

    Build it with :meth:`of`; ``fast`` must be built from ``hf`` (:func:`native_tokenizer`).
    """

    hf: Any
    fast: Any = None
    #: the template's ids before and after the text, their token type ids, and the text's type id
    _template: tuple[list[int], list[int], list[int], list[int], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_template", _template_of(self.hf) if self.fast is not None else ([], [], [], [], 0))

    @classmethod
    def of(cls, hf: Any, *, fast: Any = None, native: bool = True) -> ClassifierTokenizer:
        """``hf`` set up for a classifier (pad token, padding and truncation sides), with ``fast``,
        or, when ``native`` and ``fast`` is None, alignfw's tokenizer built from ``hf`` if its family
        is supported."""
        hf = _prepare_tokenizer(hf)
        if fast is None and native:
            fast = native_tokenizer(hf)
        return cls(hf, fast)

    def encode(self, texts: Sequence[str], *, max_length: int) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when the tokenizer returns
        them), ``(n, longest)`` int64, equal to
        ``hf(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)``."""
        hf = self.hf
        if self.fast is None:
            return dict(hf(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_length))
        before, after, type_before, type_after, type_text = self._template
        allowed = () if getattr(hf, "split_special_tokens", False) else "all"
        keep = max_length - len(before) - len(after)  # Hugging Face truncates the text, then adds the template
        rows = self.fast.encode_batch(list(texts), allowed_special=allowed)
        if keep >= 0:  # a template longer than max_length: Hugging Face leaves the text whole
            rows = [ids[len(ids) - keep :] if len(ids) > keep else ids for ids in rows]
        width = max((len(ids) for ids in rows), default=0) + len(before) + len(after)
        input_ids = torch.full((len(rows), width), hf.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros((len(rows), width), dtype=torch.long) if "token_type_ids" in hf.model_input_names else None
        for i, ids in enumerate(rows):
            n = len(before) + len(ids) + len(after)
            input_ids[i, :n] = torch.tensor(before + ids + after, dtype=torch.long)
            mask[i, :n] = 1
            if types is not None:
                types[i, :n] = torch.tensor(type_before + [type_text] * len(ids) + type_after, dtype=torch.long)
        out = {"input_ids": input_ids, "attention_mask": mask}
        if types is not None:
            out["token_type_ids"] = types
        return out


def _template_of(hf: Any) -> tuple[list[int], list[int], list[int], list[int], int]:
    """The ids (and token type ids) ``hf`` adds before and after a text, and the text's type id."""
    probe = "x"
    plain = hf(probe, add_special_tokens=False)["input_ids"]
    full = hf(probe, add_special_tokens=True, return_token_type_ids=True)
    ids, types = full["input_ids"], full["token_type_ids"]
    for start in range(len(ids) - len(plain) + 1):
        if ids[start : start + len(plain)] == plain:
            end = start + len(plain)
            return ids[:start], ids[end:], types[:start], types[end:], types[start] if plain else 0
    raise ConfigError(f"the reward model's tokenizer ({type(hf).__name__}) changes a text's ids when it adds special tokens; set reward.fast_tokenizer=false (model.fast_tokenizer=false when training one)")


def score_sequences(
    model: nn.Module, tokenizer: ClassifierTokenizer, prompts: list[str], responses: list[str], *, max_length: int
) -> torch.Tensor:
    """The classifier's score of each ``prompt + response``, float32 ``(b,)``, in one forward.

    ``model`` may be a DDP wrapper of the classifier; differentiable outside ``torch.no_grad``.
    """
    device = next(model.parameters()).device
    enc = tokenizer.encode([p + r for p, r in zip(prompts, responses)], max_length=max_length)
    return model(**{k: v.to(device) for k, v in enc.items()}).logits[:, 0].float()


def classifier_from_policy(lm: nn.Module, tokenizer: Any, fast_tokenizer: Any = None) -> tuple[nn.Module, ClassifierTokenizer]:
    """A one-output sequence classifier with ``lm``'s backbone weights, and a tokenizer set up for it
    (a copy of the policy's ``tokenizer``, with the policy's alignfw tokenizer ``fast_tokenizer``, if any).

    Built from a copy of ``lm.config`` (``num_labels=1``), its ``base_model`` given ``lm.base_model``'s
    weights, so it equals ``from_pretrained(model_dir, num_labels=1)`` without reading the files again.
    A LoRA policy (``peft`` model) gives its backbone with the adapters folded in; the classifier
    trains whole.
    """
    from transformers import AutoModelForSequenceClassification

    if is_peft_model(lm):
        lm = copy.deepcopy(lm).merge_and_unload()
    tok = ClassifierTokenizer.of(copy.deepcopy(tokenizer), fast=fast_tokenizer, native=False)
    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    config.pad_token_id = tok.hf.pad_token_id
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


def load_classifier(
    path: str, *, dtype: str, device: torch.device, option: str = "reward.path", fast_tokenizer: bool = True
) -> tuple[nn.Module, ClassifierTokenizer]:
    """A one-output sequence classifier and its tokenizer from a local directory (safetensors only),
    frozen, in eval mode on ``device``. ``option`` is the config key named in errors;
    ``fast_tokenizer``: encode with alignfw's Rust tokenizer when the tokenizer's family is supported."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    where = resolve_model_path(path, option)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(where, use_safetensors=True, dtype=parse_dtype(dtype, device))
        tok = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as e:
        raise ConfigError(f"could not load the reward model at {option}={path!r}: {e}") from e
    if model.config.num_labels != 1:
        raise ConfigError(f"{option}={path!r} has {model.config.num_labels} outputs; a reward model has exactly one (num_labels=1)")
    tok = ClassifierTokenizer.of(tok, native=fast_tokenizer)
    model.config.pad_token_id = tok.hf.pad_token_id
    model.to(device).eval().requires_grad_(False)
    return model, tok
