"""Scoring a causal LM: hidden states, per-token log-probs of given tokens (fused head), values.

Log-probabilities are computed from the last hidden states and the LM-head weight through
``alignfw.ops.logprobs`` (fused Triton kernel on CUDA, a chunked torch reference elsewhere), so the
full ``(B, T, V)`` fp32 logits are never materialised. Models whose head is not a plain linear
layer on the last hidden state (final-logit soft-capping, logit scaling) use their own logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from alignfw.models.adapters import unwrap
from alignfw.ops.logprobs import logprobs_from_hidden, logprobs_from_logits

if TYPE_CHECKING:
    from alignfw.models.protocol import PolicyModel

__all__ = ["PolicyModule", "disable_dropout", "forward_hidden", "position_ids_from_mask", "response_logprobs", "score_tokens"]


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (PPO's policy, reference and value passes must agree)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    cfg = getattr(module, "config", None)
    for key in ("attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_dropout", "dropout"):
        if cfg is not None and isinstance(getattr(cfg, key, None), float):
            setattr(cfg, key, 0.0)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` uses them. Shape ``(b, T)``."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# -- the policy's forward, as one module (what DDP / FSDP2 wrap) --------------------------------


def forward_hidden(lm: Any, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states of ``lm``'s base model, ``(b, T, H)``, positions skipping left padding.

    For a ``peft`` model, the backbone of the wrapped ``transformers`` model (its LoRA layers
    injected): ``PeftModel.base_model`` is peft's tuner, whose forward returns logits.
    """
    out = unwrap(lm).base_model(
        input_ids=sequences,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def score_tokens(
    lm: Any,
    value_head: nn.Module | None,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    prompt_len: int,
    *,
    temperature: float = 1.0,
    values: bool = False,
    entropy: bool = False,
    fused_head: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Log-probs of ``targets`` (``-100``: masked) given ``sequences`` under ``lm``; see :meth:`CausalLM.score`.

    Shapes: ``sequences``, ``attention_mask`` ``(b, P + R)``; ``targets`` ``(b, R)``. Returns
    ``logprobs`` (and ``entropy``, ``values`` when asked) ``(b, R)``; ``values`` are not masked.
    """
    P = prompt_len
    hidden = forward_hidden(lm, sequences, attention_mask)  # (b, T, H)
    h = hidden[:, P - 1 : -1]  # states that predict the response tokens, (b, R, H)
    head = unwrap(lm).get_output_embeddings()  # the plain LM head, also under a peft model
    if fused_head is None:
        fused_head = isinstance(head, nn.Linear)
    if fused_head:
        res = logprobs_from_hidden(h, head.weight, targets, bias=head.bias, temperature=temperature, return_entropy=entropy)
    else:
        res = logprobs_from_logits(head(h), targets, temperature=temperature, return_entropy=entropy)
    out: dict[str, torch.Tensor] = {}
    if entropy:
        out["logprobs"], out["entropy"] = res
    else:
        out["logprobs"] = res
    if values:
        if value_head is None:
            raise RuntimeError("score(values=True) needs add_value_head() first")
        out["values"] = value_head(h).squeeze(-1).float()
    return out


class PolicyModule(nn.Module):
    """The trained policy as one ``nn.Module``: ``lm`` plus the optional ``value_head``.

    Its ``forward`` is :func:`score_tokens` (the fused log-prob head reads ``lm``'s output-embedding
    weight, so the whole computation must run inside one forward for DDP's reducer and FSDP2's
    all-gathers to see it), or, with ``generate=kwargs``, ``lm.generate(**kwargs)`` (FSDP2 needs
    the root's forward to gather the root's shards). ``adapters=False`` scores a LoRA policy's
    network with its adapters disabled (the reference), also through the root.
    """

    def __init__(self, lm: nn.Module, value_head: nn.Module | None, fused_head: bool) -> None:
        super().__init__()
        self.lm = lm
        self.value_head = value_head
        self.fused_head = fused_head

    def forward(self, *args: Any, generate: dict[str, Any] | None = None, adapters: bool = True, **kwargs: Any) -> Any:
        if generate is not None:
            return self.lm.generate(**generate)
        if not adapters:  # a LoRA policy's reference: the same network with its adapters off, through the root
            with self.lm.disable_adapter():
                return score_tokens(self.lm, None, *args, fused_head=self.fused_head, **kwargs)
        return score_tokens(self.lm, self.value_head, *args, fused_head=self.fused_head, **kwargs)


def response_logprobs(model: PolicyModel, prompts: list[str], responses: list[str], *, lm: Any = None) -> dict[str, torch.Tensor]:
    """Log-probs of ``responses`` (each followed by EOS) given ``prompts`` under ``lm`` (default: the policy).

    Through :meth:`PolicyModel.encode_pairs` and :meth:`PolicyModel.score` (the fused op on CUDA);
    differentiable when called outside ``torch.no_grad``.

    Notation:
        b: number of pairs; R: longest response in tokens, EOS included.

    Returns:
        ``token`` ``(b, R)`` per-token log-probs (0 on padding), ``mask`` ``(b, R)`` float,
        ``sum`` ``(b,)`` summed log-prob of each response, ``length`` ``(b,)`` its token count.
    """
    gen = model.encode_pairs(prompts, responses)
    token = model.score(gen, lm=lm)["logprobs"].float()  # (b, R)
    mask = gen.response_mask.float()  # (b, R)
    return {"token": token, "mask": mask, "sum": (token * mask).sum(1), "length": mask.sum(1)}
