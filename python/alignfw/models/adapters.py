"""LoRA adapters on the policy (``model.lora.*``), through Hugging Face ``peft``.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) freezes the base weights ``W`` and trains a
low-rank update ``(alpha / r) * B @ A`` beside chosen linear layers; ``peft``'s ``get_peft_model``
injects those layers (its ``LoraConfig``, ``target_modules="all-linear"``: every linear layer but
the output head). Here LoRA is a property of the policy:

- the policy's ``lm`` is the ``PeftModel``; only the adapters (and the value head) require grad,
  so :meth:`CausalLM.trainable_parameters` hands only them to the optimizer;
- the frozen reference is the same module with its adapters switched off (``disable_adapter()``),
  :class:`AdapterFreeReference`: no second copy of the weights, and nothing of its own to checkpoint;
- saving writes the adapter (``adapter_config.json`` + ``adapter_model.safetensors``, loadable with
  ``PeftModel.from_pretrained``) and, with ``merge``, a merged model in ``merged/`` that plain
  ``transformers`` loads.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from alignfw.config import option
from alignfw.exceptions import ConfigError

__all__ = ["AdapterFreeReference", "LoraOptions", "add_lora", "adapter_key_names", "adapter_state_dict", "is_peft_model", "load_adapter_state_dict", "save_merged", "unwrap"]

PIP_HINT = 'pip install "alignfw[lora]" (or: pip install peft)'


@dataclass
class LoraOptions:
    """LoRA options of a policy model (``model.lora.*``)."""

    enabled: bool = False  #: train LoRA adapters instead of every weight
    r: int = option(8, ge=1)  #: rank of each update ``B @ A``
    alpha: float = option(16.0, gt=0)  #: scale: the update is multiplied by ``alpha / r``
    dropout: float = option(0.0, ge=0, lt=1)  #: dropout on the adapter's input (off in the RL algorithms, which disable dropout)
    #: module names (suffixes, as peft matches them: ``[q_proj, v_proj]``) or ``all-linear``
    #: (every linear layer except the output head)
    target_modules: Any = "all-linear"
    #: also write ``final/merged``: the base weights with the adapters folded in, for plain transformers
    merge: bool = False


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError(f"model.lora.enabled=true needs the peft package, which is not installed: {PIP_HINT}") from None
    return peft


def is_peft_model(lm: Any) -> bool:
    """``lm`` is a ``peft`` ``PeftModel`` (without importing peft: a process that never imported it has none)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(lm, peft.PeftModel)


def unwrap(lm: Any) -> Any:
    """The ``transformers`` model inside a ``PeftModel`` (with the LoRA layers injected), else ``lm``."""
    return lm.get_base_model() if is_peft_model(lm) else lm


def _targets(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"model.lora.target_modules={value!r}: give a list of module names (e.g. [q_proj,v_proj]) or all-linear")


def _linear_names(lm: nn.Module) -> list[str]:
    """The last name component of every linear layer (``nn.Linear``, GPT-2's ``Conv1D``) but the output
    head: what a target may name."""
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    conv = _conv1d()
    linear = (nn.Linear,) if conv is None else (nn.Linear, conv)
    names = {name.rsplit(".", 1)[-1] for name, m in lm.named_modules() if isinstance(m, linear) and m is not head}
    return sorted(names)


def _conv1d() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return None
    return Conv1D


def _check_targets(lm: nn.Module, targets: str | list[str]) -> None:
    """Every named target must match a module of ``lm`` (peft's own error names no candidates)."""
    if isinstance(targets, str):
        if targets == "all-linear":
            return
        targets = [targets]
    leaf = {name.rsplit(".", 1)[-1] for name, _ in lm.named_modules()}
    full = {name for name, _ in lm.named_modules()}
    unknown = [t for t in targets if t not in leaf and not any(n.endswith("." + t) for n in full)]
    if unknown:
        raise ConfigError(
            f"model.lora.target_modules: {', '.join(map(repr, unknown))} {'matches' if len(unknown) == 1 else 'match'} "
            f"no module of {type(lm).__name__}; "
            f"linear layers that would match: {', '.join(_linear_names(lm))} (or all-linear)"
        )


def add_lora(lm: nn.Module, opts: LoraOptions) -> Any:
    """``lm`` wrapped as a ``peft`` ``PeftModel`` with fresh LoRA adapters (``B = 0``: it starts as ``lm``).

    Raises:
        ConfigError: peft is missing, a target matches no module, or an option is out of range.
    """
    peft = _peft()
    if opts.r < 1:
        raise ConfigError(f"model.lora.r={opts.r}: the rank must be at least 1")
    if not 0.0 <= opts.dropout < 1.0:
        raise ConfigError(f"model.lora.dropout={opts.dropout}: use a probability in [0, 1)")
    targets = _targets(opts.target_modules)
    _check_targets(lm, targets)
    config = peft.LoraConfig(
        r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM"
    )
    # with gradient checkpointing on, peft makes the embeddings' output require grad, so that reentrant
    # checkpointing passes gradients to the adapters although every base weight is frozen
    return peft.get_peft_model(lm, config)


class AdapterFreeReference(nn.Module):
    """The frozen reference of a LoRA policy: the policy's own ``PeftModel`` with adapters disabled.

    It holds no parameters of its own (the ``PeftModel`` is kept outside the module tree), so its
    ``state_dict()`` is empty: the reference's weights are the base weights, which never change and
    are loaded from ``model.path``. :meth:`CausalLM.score` scores with ``lm=<this>`` by running the
    policy's network inside :meth:`disabled`.
    """

    def __init__(self, peft_model: Any) -> None:
        super().__init__()
        self.__dict__["_peft_model"] = peft_model  # not a submodule: no weights copied or checkpointed

    @property
    def peft_model(self) -> Any:
        return self.__dict__["_peft_model"]

    @contextlib.contextmanager
    def disabled(self) -> Iterator[Any]:
        """The policy network with its adapters switched off (no gradient reaches them)."""
        with self.peft_model.disable_adapter():
            yield self.peft_model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.disabled() as lm:
            return lm(*args, **kwargs)


def adapter_state_dict(lm: Any, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter weights as ``save_pretrained`` writes them (keys without the adapter's name)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(lm, state_dict=state_dict)


def load_adapter_state_dict(lm: Any, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load adapter weights (as :func:`adapter_state_dict` gives them); returns ``(missing, unexpected)``
    adapter keys (the frozen base weights are not expected)."""
    from peft import set_peft_model_state_dict

    expected = set(adapter_state_dict(lm))
    res = set_peft_model_state_dict(lm, state)
    return sorted(expected - set(state)), sorted(res.unexpected_keys)


def adapter_key_names(module_keys: set[str] | list[str], adapter: str = "default") -> dict[str, str]:
    """``{saved name: module name}`` of the adapter weights among a peft model's state-dict keys
    (``...q_proj.lora_A.default.weight`` is saved as ``...q_proj.lora_A.weight``)."""
    return {k.replace(f".{adapter}.", "."): k for k in module_keys if ".lora_" in k and f".{adapter}." in k}


def save_merged(lm: Any, path: str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """The base model with the adapters folded in (``W + alpha/r * B @ A``), saved for plain
    ``transformers``; the live policy keeps its adapters (the merge runs on a copy)."""
    merged = copy.deepcopy(lm)
    if state_dict is not None:
        load_adapter_state_dict(merged, state_dict)
    merged = merged.merge_and_unload()
    merged.save_pretrained(path, safe_serialization=True)
