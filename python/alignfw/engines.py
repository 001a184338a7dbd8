"""Generation engines: what samples a rollout's responses (``rollout.engine=hf|vllm|vllm_server``).

:func:`alignfw.rollout.rollout` asks :func:`engine_for` for the engine of its policy, built once per
policy from the plugin registered under ``rollout.engine`` (``register_engines``) and kept for the
policy's lifetime. Before each rollout it calls :meth:`GenerationEngine.wake`, then
:meth:`~GenerationEngine.sync_weights` (the optimizer has changed the policy since the last rollout),
then :meth:`~GenerationEngine.generate`, then :meth:`~GenerationEngine.sleep`.

The default ``hf`` engine (:class:`HFEngine`) is the policy's own ``model.generate``: the trainer
and the sampler are one network, so nothing is synced and nothing is off-policy. Other engines (vLLM)
sample with a second copy of the weights; their numerics differ slightly from the trainer's, so they
return the sampled tokens' log-probs (:class:`SampledGeneration`), the algorithms report the gap
and may correct for it with truncated importance sampling (:func:`engine_correction`; Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You
Off-Policy RL Training", https://fengyao.notion.site/off-policy-rl).

Notation: ``b`` sequences, ``R`` response tokens (padded).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import torch

from alignfw.config import NAME_KEY, RolloutConfig
from alignfw.exceptions import AlignfwError, ConfigError
from alignfw.models.protocol import Generation

if TYPE_CHECKING:
    from alignfw.models import PolicyModel

__all__ = [
    "EngineError",
    "GenerationEngine",
    "HFEngine",
    "HFEngineConfig",
    "SampledGeneration",
    "WeightFingerprints",
    "engine_for",
    "engine_correction",
    "engine_gap_stats",
    "generation_from_tokens",
]


class EngineError(AlignfwError):
    """A generation engine cannot be built or reached (not installed, unsupported model, server down)."""


@dataclass
class SampledGeneration(Generation):
    """A :class:`Generation` with the engine's log-probs of the sampled tokens.

    Shape: ``logprobs`` ``(b, R)`` float32, 0 where ``response_mask`` is 0. They are the engine's
    numbers at the sampling temperature, compared with the trainer's by :func:`engine_gap_stats`.
    """

    logprobs: torch.Tensor | None = None


@runtime_checkable
class GenerationEngine(Protocol):
    """What a ``register_engines`` factory returns. ``factory(cfg, ctx)``: ``ctx.model`` is the policy."""

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
        """One continuation per prompt, with the policy's rules (:meth:`PolicyModel.generate`):
        prompts left-padded as ``model.encode_prompts`` does, ``response_mask`` up to and including
        the first stop token, ``ended``, texts cut before the first stop string. ``seeds``: one
        int per prompt, so that a row's sample does not depend on the batch it is in."""
        ...

    def sync_weights(self, model: PolicyModel) -> None:
        """Make the engine sample from ``model``'s current weights (a no-op when nothing changed)."""
        ...

    def sleep(self) -> None:
        """Free what the engine holds on the accelerator while the trainer trains (no-op if unsupported)."""
        ...

    def wake(self) -> None:
        """Undo :meth:`sleep` before the next :meth:`sync_weights` and :meth:`generate`."""
        ...


# -- the default engine -------------------------------------------------------------------------


@dataclass
class HFEngineConfig:
    """The ``hf`` engine has no options: it is the policy's own ``generate``."""


class HFEngine:
    """Samples with the policy's ``model.generate`` (Hugging Face ``transformers``); the default."""

    def __init__(self, cfg: HFEngineConfig | None = None, ctx: Any = None) -> None:
        self.model = None if ctx is None else ctx.model

    def generate(self, prompts: list[str], *, seeds: Sequence[int] | None = None, **sampling: Any) -> Generation:
        extra = {} if seeds is None else {"seeds": seeds}
        return self.model.generate(prompts, **sampling, **extra)

    def sync_weights(self, model: PolicyModel) -> None:
        self.model = model  # the trainer's network itself: nothing to copy

    def sleep(self) -> None:
        pass

    def wake(self) -> None:
        pass


# -- one engine per policy ------------------------------------------------------------------------

_ENGINES: weakref.WeakKeyDictionary[Any, tuple[Any, GenerationEngine]] = weakref.WeakKeyDictionary()


def engine_for(model: PolicyModel, cfg: RolloutConfig) -> GenerationEngine:
    """The engine ``cfg.engine`` selects for ``model``, built on first use and kept with the policy
    (a rollout with other engine options replaces it).

    ``cfg.engine``: None or ``"hf"`` (the policy's ``generate``), a registered engine name, or an
    engine's config dataclass (Hydra's ``rollout.engine=vllm rollout.engine.<option>=...`` makes one).
    """
    spec = getattr(cfg, "engine", None)
    cached = _ENGINES.get(model)
    if cached is not None and cached[0] == spec:  # the same name or equal options: the same engine
        return cached[1]
    name, options = _resolve(spec)
    if name == "hf":
        engine: GenerationEngine = HFEngine(ctx=_context(model, cfg))
    else:
        from alignfw.registry import get_registry

        reg = get_registry().get("engine", name)
        if options is None:
            options = reg.config()
        engine = reg.build(options, _context(model, cfg))
    if cached is not None:
        close = getattr(cached[1], "close", None)
        if close is not None:
            close()
    _ENGINES[model] = (spec, engine)
    return engine


def _resolve(spec: Any) -> tuple[str, Any]:
    """``(engine name, config instance or None)`` from a ``rollout.engine`` value."""
    if spec is None:
        return "hf", None
    if isinstance(spec, str):
        return spec, None
    name = getattr(spec, NAME_KEY, None)
    if name:
        return name, spec
    from alignfw.registry import get_registry

    for reg in get_registry().all():
        if reg.kind == "engine" and isinstance(spec, reg.config):
            return reg.name, spec
    raise ConfigError(f"rollout.engine={spec!r} is not a registered engine's config; use rollout.engine=<name> (hf, vllm, ...)")


def _context(model: PolicyModel, cfg: RolloutConfig) -> Any:
    from alignfw.registry import BuildContext, get_registry

    return BuildContext(get_registry(), device=model.device, rollout=cfg, model=model)


# -- what engines share -------------------------------------------------------------------------


class WeightFingerprints:
    """Which of a module's tensors changed since the last :meth:`changed` call.

    A tensor's fingerprint is its L2 norm (one fused pass over the weights, far cheaper than sending
    them): an optimizer step moves every weight it updates, so the norm moves too. Tensor version
    counters would be cheaper still, but the fused AdamW kernel updates weights without bumping them.
    """

    def __init__(self) -> None:
        self._seen: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def changed(self, tensors: dict[str, torch.Tensor]) -> list[str]:
        """Names in ``tensors`` that are new or were modified since the previous call."""
        names = list(tensors)
        if not names:
            return []
        norms = torch._foreach_norm([tensors[n].detach() for n in names])  # one fused pass
        out = []
        for name, norm in zip(names, norms):
            old = self._seen.get(name)
            if old is None or not torch.equal(old, norm):
                out.append(name)
                self._seen[name] = norm
        return out


def generation_from_tokens(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    responses: list[list[int]],
    stop_strings: Sequence[str] = (),
    logprobs: list[list[float]] | None = None,
) -> SampledGeneration:
    """A :class:`SampledGeneration` from an engine's sampled token lists, by the rules of
    :meth:`CausalLM.generate`: each response keeps its tokens up to and including the first stop
    token, or up to the token that completes the first stop string (its text ends before it);
    positions after that hold the pad id; ``R`` is the longest kept response.

    Shapes: ``ids``, ``mask`` ``(b, P)``; ``responses[i]``, ``logprobs[i]``: the sampled tokens of
    row ``i`` and their log-probs.
    """
    eos = set(model.eos_token_ids)
    pad = model.tokenizer.pad_token_id
    kept: list[list[int]] = []
    ended: list[bool] = []
    for row in responses:
        n = next((i + 1 for i, t in enumerate(row) if t in eos), None)
        kept.append(row[:n] if n is not None else list(row))
        ended.append(n is not None)
    texts = model.decode_texts(kept)
    for i, cut in enumerate(model.stop_string_cuts(kept, texts, stop_strings)):
        if cut is not None:
            kept[i] = kept[i][: cut[0]]
            texts[i], ended[i] = cut[1], True
    R = max((len(r) for r in kept), default=0)
    b = len(kept)
    resp = torch.full((b, R), pad, dtype=torch.long)
    response_mask = torch.zeros((b, R), dtype=torch.long)
    lp = torch.zeros((b, R), dtype=torch.float32)
    for i, r in enumerate(kept):
        resp[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        response_mask[i, : len(r)] = 1
        if logprobs is not None:
            lp[i, : len(r)] = torch.tensor(logprobs[i][: len(r)], dtype=torch.float32)
    dev = ids.device
    sequences = torch.cat([ids, resp.to(dev)], dim=1)  # (b, P + R)
    response_mask = response_mask.to(dev)
    return SampledGeneration(
        sequences,
        torch.cat([mask, response_mask], dim=1),
        response_mask,
        ids.shape[1],
        texts,
        ended=torch.tensor(ended, dtype=torch.bool, device=dev),
        logprobs=lp.to(dev) if logprobs is not None else None,
    )


def engine_gap_stats(trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the engine's sampling distribution is from the trainer's, on the sampled tokens.

    ``engine/logprob_gap``: mean ``|log p_trainer - log p_engine|``; ``engine/logprob_gap_max``: the
    largest; ``engine/kl``: the k3 estimate of ``KL(engine || trainer)``. Shapes: all ``(b, R)``.
    """
    m = mask.bool()
    if not m.any():
        return {}
    diff = (trainer_logprobs - engine_logprobs)[m]
    return {
        "engine/logprob_gap": diff.abs().mean().item(),
        "engine/logprob_gap_max": diff.abs().max().item(),
        "engine/kl": (diff.exp() - 1 - diff).mean().item(),
    }


def engine_correction(
    trainer_logprobs: torch.Tensor,
    engine_logprobs: torch.Tensor | None,
    mask: torch.Tensor,
    cap: float | None,
    *,
    level: str = "token",
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """Truncated importance weights ``min(p_trainer / p_engine, cap)`` (TIS), detached, and the
    engine-trainer gap (:func:`engine_gap_stats`).

    The engine sampled the tokens, while the loss is about the trainer's policy: weighting each
    token's policy-gradient term by the ratio corrects for the difference, and the cap bounds the
    variance. Since the weight is >= 0, it multiplies the advantage (inside a clipped surrogate too).
    ``level="sequence"``: one weight per response, from the summed log-ratio (RLOO's one-action view).

    Shapes: inputs ``(b, R)``; weights ``(b, R)`` (token, 0 where masked) or ``(b,)`` (sequence).
    Returns ``(None, stats)`` when ``cap`` is None, ``(None, {})`` for the ``hf`` engine
    (``engine_logprobs`` None: its sampler is the trainer).
    """
    if engine_logprobs is None:
        return None, {}
    stats = engine_gap_stats(trainer_logprobs, engine_logprobs, mask)
    if cap is None:
        return None, stats
    if cap <= 0:
        raise ConfigError(f"algo.tis_cap={cap}: the importance-weight cap must be > 0 (e.g. 2.0), or null to turn it off")
    log_ratio = (trainer_logprobs.detach() - engine_logprobs) * mask  # (b, R)
    if level == "sequence":
        ratio = log_ratio.sum(1).exp()  # (b,)
        w = ratio.clamp(max=cap)
        stats.update({"engine/is_weight": w.mean().item(), "engine/is_clipfrac": (ratio > cap).float().mean().item()})
        return w, stats
    ratio = log_ratio.exp()
    w = ratio.clamp(max=cap) * mask
    m = mask.bool()
    if m.any():
        stats.update({"engine/is_weight": w[m].mean().item(), "engine/is_clipfrac": (ratio[m] > cap).float().mean().item()})
    return w, stats
