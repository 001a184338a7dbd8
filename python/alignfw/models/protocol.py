"""The model contract: what a model plugin's factory returns and what algorithms may call.

:class:`alignfw.models.CausalLM` (Hugging Face causal LMs) implements it; a plugin with another
kind of model implements the same members. ``isinstance(model, PolicyModel)`` checks the names
only (``runtime_checkable``); the signatures below are the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ContextManager, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

__all__ = ["Generation", "PolicyModel", "missing_members"]


@dataclass
class Generation:
    """Token sequences of prompts and their responses (sampled, or given for offline scoring).

    Shapes: ``sequences`` and ``attention_mask`` ``(b, P + R)`` (prompts left-padded to ``P``),
    ``response_mask`` ``(b, R)``: 1 for response tokens up to and including the first EOS.
    """

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_len: int
    responses: list[str]
    #: ``(b,)`` bool: the response ended with a stop token (None for given, not sampled, responses)
    ended: torch.Tensor | None = None

    @property
    def response_ids(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_len :]

    def select(self, idx: torch.Tensor) -> Generation:
        """The rows ``idx`` (a minibatch); texts are not carried over."""
        ended = None if self.ended is None else self.ended[idx]
        return Generation(self.sequences[idx], self.attention_mask[idx], self.response_mask[idx], self.prompt_len, [], ended)


@runtime_checkable
class PolicyModel(Protocol):
    """A trainable policy with its tokenizer: what ``register_models`` factories return.

    Lifecycle, as an algorithm's ``__init__`` drives it: :meth:`add_value_head` and
    :meth:`make_reference` if needed, then :meth:`parallelize` (explicit; a no-op in one process),
    then an optimizer over :meth:`trainable_parameters`.
    """

    lm: nn.Module  #: the underlying network (a ``transformers`` ``PreTrainedModel`` for CausalLM)
    tokenizer: Any  #: a Hugging Face tokenizer (saved with the model)
    device: torch.device
    value_head: nn.Module | None  #: set by :meth:`add_value_head`
    grad_scaler: Any  #: fp16's ``torch.amp.GradScaler`` for :func:`alignfw.optim.accumulate`; None otherwise

    @property
    def fsdp(self) -> bool:
        """True once :meth:`parallelize` sharded the policy with FSDP2 (collective saving and loading)."""
        ...

    def add_value_head(self) -> nn.Module:
        """A scalar value head on the last hidden state, created once; returns it."""
        ...

    def make_reference(self) -> nn.Module:
        """A frozen copy of the current policy network, created once; returns it. Pass it as
        :meth:`score`'s ``lm``; a LoRA policy returns a weightless view of itself with the adapters
        disabled (its ``state_dict()`` is empty)."""
        ...

    def parallelize(self, strategy: str | None) -> None:
        """Wrap the policy for several processes (``ddp`` / ``fsdp2``; ``None`` or one process: nothing).

        Call after :meth:`add_value_head` / :meth:`make_reference` and before building the optimizer.
        """
        ...

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should update (the policy's and the value head's)."""
        ...

    def take_stats(self) -> dict[str, float]:
        """Counters since the last call (e.g. ``data/truncated_prompts``), logged with each step's metrics."""
        ...

    def no_sync(self, skip: bool = True) -> ContextManager[Any]:
        """Backward passes inside accumulate gradients without the cross-rank all-reduce when ``skip``."""
        ...

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = (),
        seeds: Sequence[int] | None = None,
    ) -> Generation:
        """Sample one continuation per prompt; a stop token or the first of ``stop_strings`` ends it.
        ``seeds`` (one int per prompt): row ``i``'s tokens are a function of ``seeds[i]`` and its own
        logits only (not of the other rows), which makes N processes sample what one does."""
        ...

    def encode_pairs(self, prompts: list[str], responses: list[str]) -> Generation:
        """Given (prompt, response) pairs as a :class:`Generation`, each response followed by EOS."""
        ...

    def score(
        self, gen: Generation, *, temperature: float = 1.0, lm: Any = None, values: bool = False, entropy: bool = False
    ) -> dict[str, torch.Tensor]:
        """Per-token ``logprobs`` ``(b, R)`` of the responses under ``lm`` (default: the policy), and
        ``values`` / ``entropy`` ``(b, R)`` when asked. Differentiable outside ``torch.no_grad``."""
        ...

    def policy_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """Full state dicts ``{"lm": ..., "value_head": ...}`` (a collective under FSDP2)."""
        ...

    def load_policy_state_dict(
        self, lm_state: dict[str, torch.Tensor] | None = None, value_head_state: dict[str, torch.Tensor] | None = None
    ) -> tuple[list[str], list[str]]:
        """Load full state dicts; returns the network's ``(missing, unexpected)`` keys."""
        ...

    def save_pretrained(self, path: str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the policy so that it loads back in its own library (Hugging Face format, safetensors)."""
        ...


def missing_members(obj: object) -> list[str]:
    """The members of :class:`PolicyModel` that ``obj`` lacks (empty: it fulfils the protocol's names)."""
    names = set(PolicyModel.__annotations__) | {n for n in vars(PolicyModel) if not n.startswith("_")}
    return sorted(n for n in names if not hasattr(obj, n))
