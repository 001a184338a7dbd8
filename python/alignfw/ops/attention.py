"""The fused causal attention kernel as a Hugging Face ``attn_implementation``.

After :func:`register_attention`, any transformers causal LM built with
``attn_implementation="alignfw"`` (``AutoModelForCausalLM.from_config(cfg, attn_implementation="alignfw")``,
``from_pretrained(..., attn_implementation="alignfw")`` or ``model.set_attn_implementation("alignfw")``)
runs its attention through :func:`alignfw.kernels.fused_attention.fused_attention` (FlashAttention-2,
https://arxiv.org/abs/2307.08691). The function follows transformers' attention interface
(``transformers.integrations.sdpa_attention.sdpa_attention_forward`` is the model for it):
``(module, query (b, h, T, d), key (b, hk, S, d), value, attention_mask, dropout=, scaling=, **kwargs)
-> (attn_output (b, T, h, d), None)``.

Mask: the name is also registered with transformers' ``AttentionMaskInterface`` using ``sdpa_mask``,
so the model hands over either ``None`` (plain causal, no padding) or a 4-D boolean mask
``(b, 1, T, T)``. A 4-D mask is accepted only if it is exactly "causal AND key padding"; the padding
vector is read off its last row and the whole mask is compared against the rebuilt one (once per
forward pass: the result is cached on the mask tensor's identity and version).

Dispatch rule — the Triton kernels run when all of these hold, else the call goes to transformers'
own ``sdpa_attention_forward`` with the same arguments (the answer the ``sdpa`` implementation gives):

1. the tensors are fp16/bf16 on CUDA (or any of fp32/fp16/bf16 on CPU under ``TRITON_INTERPRET=1``),
   head dim is 64 or 128, and ``q_len == kv_len`` (so decoding steps and cached prefixes go to SDPA);
2. the layer is causal (``module.is_causal`` / ``is_causal`` kwarg) and ``dropout == 0``;
3. the mask is ``None`` or exactly causal AND key padding (sliding windows, packed-sequence and
   custom masks go to SDPA);
4. no ``position_bias`` kwarg.

``softcap`` and attention sinks (``s_aux``) are refused with :class:`InvalidInputError`: SDPA cannot
compute them either, and ignoring them would be a silent wrong answer. Register with ``strict=True``
to turn every fallback into an :class:`InvalidInputError` naming the reason. ``dispatch_counts``
counts how calls were served (``"triton"`` or ``"sdpa: <reason>"``).
"""

from __future__ import annotations

import collections
import weakref
from typing import Any

import torch

from alignfw.exceptions import InvalidInputError
from alignfw.kernels.fused_attention import FusedAttention, triton_supports

__all__ = ["DEFAULT_NAME", "alignfw_attention_forward", "dispatch_counts", "key_padding_from_mask", "register_attention"]

DEFAULT_NAME = "alignfw"
dispatch_counts: collections.Counter[str] = collections.Counter()

# (weakref to the last mask checked, its _version, its key-padding result or a refusal reason)
_mask_cache: tuple[Any, int, Any] | None = None


def key_padding_from_mask(mask: torch.Tensor, T: int) -> tuple[bool, torch.Tensor | None]:
    """Read a ``(b, T)`` key-padding vector off a 4-D mask, if the mask is exactly causal AND padding.

    Args:
        mask: Boolean (True = attend) or additive float (0 = attend, very negative = masked) mask.
            Shape ``(b or 1, 1, T, T)``.
        T: Sequence length of the queries and keys.

    Returns:
        ``(ok, keep)``: ``ok`` is False when the mask is anything else; ``keep`` is the ``(b, T)``
        bool vector of real tokens, or None when nothing is padded.
    """
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != T or mask.shape[3] != T:
        return False, None
    if mask.dtype == torch.bool:
        allowed = mask
    else:
        allowed = mask == 0
        # Any additive value other than 0 and "effectively -inf" is a bias the kernel cannot apply.
        if not bool(((mask == 0) | (mask <= torch.finfo(mask.dtype).min / 2)).all()):
            return False, None
    keep = allowed[:, 0, -1, :]  # (b, T): the last query row sees every real key
    causal = torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()  # (T, T)
    expected = causal.view(1, 1, T, T) & keep.view(-1, 1, 1, T)  # (b, 1, T, T)
    if not torch.equal(allowed, expected):
        return False, None
    return True, (None if bool(keep.all()) else keep)


def _padding_for(mask: torch.Tensor, T: int) -> tuple[bool, torch.Tensor | None]:
    global _mask_cache
    if _mask_cache is not None:
        ref, version, result = _mask_cache
        if ref() is mask and version == mask._version:
            return result
    ok, keep = key_padding_from_mask(mask, T)
    # The kernels read the padding as int8; convert once per forward pass, not once per layer.
    result = (ok, None if keep is None else keep.to(torch.int8).contiguous())
    try:
        _mask_cache = (weakref.ref(mask), mask._version, result)
    except TypeError:  # pragma: no cover - tensors support weak references
        _mask_cache = None
    return result


def _fallback_reason(module, query, key, attention_mask, dropout, is_causal, kwargs) -> tuple[str | None, Any]:
    why = triton_supports(query, key)
    if why is not None:
        return why, None
    if dropout and dropout > 0:
        return f"dropout={dropout} (the kernels have no dropout)", None
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if not causal:
        return "non-causal attention", None
    if kwargs.get("position_bias") is not None:
        return "position_bias", None
    if attention_mask is None:
        return None, None
    if not isinstance(attention_mask, torch.Tensor):
        return f"mask of type {type(attention_mask).__name__}", None
    ok, keep = _padding_for(attention_mask, query.shape[2])
    if not ok:
        return "mask is not causal AND key padding", None
    return None, keep


def alignfw_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    *,
    strict: bool = False,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function backed by the fused Triton kernel (see the module docstring).

    Notation:
        b: batch; h: query heads; hk: key/value heads; T: query length; S: key length; d: head dim.

    Args:
        module: The attention layer (read: ``is_causal``).
        query: Shape ``(b, h, T, d)``.
        key: Shape ``(b, hk, S, d)``.
        value: Shape ``(b, hk, S, d)``.
        attention_mask: None or the 4-D mask made by ``sdpa_mask``. Shape ``(b, 1, T, S)``.
        dropout: Attention dropout probability (any value > 0 goes to SDPA).
        scaling: Softmax scale; default ``d ** -0.5``.
        is_causal: Overrides ``module.is_causal`` when given.
        strict: Raise instead of falling back to SDPA.

    Returns:
        ``(attn_output, None)`` with ``attn_output`` of shape ``(b, T, h, d)``, contiguous.
    """
    if kwargs.get("softcap") is not None:
        raise InvalidInputError("attn_implementation='alignfw' does not support softcap; use 'eager' for this model")
    if kwargs.get("s_aux") is not None:
        raise InvalidInputError(
            "attn_implementation='alignfw' does not support attention sinks (s_aux); use 'eager' for this model"
        )
    reason, keep = _fallback_reason(module, query, key, attention_mask, dropout, is_causal, kwargs)
    if reason is None:
        dispatch_counts["triton"] += 1
        if query.shape[1] % key.shape[1] != 0:
            raise InvalidInputError(f"query heads ({query.shape[1]}) must be a multiple of key/value heads ({key.shape[1]})")
        scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
        # Inputs were vetted by _fallback_reason; skip fused_attention's per-call checks (host syncs).
        out = FusedAttention.apply(query, key, value, keep, scale)  # (b, h, T, d) view of (b, T, h, d)
        return out.transpose(1, 2), None  # (b, T, h, d); contiguous by construction
    if strict:
        raise InvalidInputError(f"the fused attention kernel cannot run this call: {reason}")
    dispatch_counts[f"sdpa: {reason}"] += 1
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )


def _strict_forward(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    return alignfw_attention_forward(*args, strict=True, **kwargs)


def register_attention(name: str = DEFAULT_NAME, *, strict: bool = False) -> str:
    """Register the fused attention with transformers under ``name`` and return the name.

    Registers both the attention function (``AttentionInterface``) and, so that padding masks are
    built and passed in, ``sdpa_mask`` as the mask function (``AttentionMaskInterface``); without the
    latter transformers would hand an unknown implementation no mask at all. Idempotent.

    Args:
        name: The ``attn_implementation`` string to use in ``from_config``/``from_pretrained``.
        strict: If True, calls the kernels cannot serve raise :class:`InvalidInputError` instead of
            going to SDPA.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, _strict_forward if strict else alignfw_attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
