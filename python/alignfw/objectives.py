"""The mathematics of the training objectives: pure functions on tensors, one home each.

Every algorithm, built-in or third-party, composes these; none is written twice. They take
tensors and numbers, never a model or a config, so each is tested on its own.

- masked statistics: :func:`masked_mean`, :func:`masked_var`, :func:`masked_whiten` (the one
  whitening; ``alignfw.distributed.global_masked_whiten`` feeds it every rank's statistics);
- KL to the reference: :func:`kl_estimate` (Schulman's k1, k2, k3 estimators),
  :func:`kl_shaped_rewards` (per token, PPO / REINFORCE), :func:`kl_penalised_rewards` (per
  sequence, RLOO), :class:`AdaptiveKLController`;
- advantages: :func:`group_advantages` (GRPO), :func:`leave_one_out_advantages` (RLOO),
  :func:`discounted_returns` (REINFORCE; GAE itself is :func:`alignfw.ops.gae`);
- policy-gradient losses: :func:`clipped_surrogate`, :func:`clipped_value_loss`,
  :func:`aggregate_loss`;
- likelihood, preference and ranking losses: :func:`sft_loss`, :func:`dpo_loss`,
  :func:`bradley_terry_loss`, :func:`rrhf_loss`, :func:`pro_loss`.

Notation: ``b`` sequences, ``R`` response tokens (padded), ``G`` samples per prompt; grouped
tensors keep the ``G`` samples of one prompt contiguous (``repeat_interleave``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignfw.exceptions import ConfigError
from alignfw.ops.gae import gae

__all__ = [
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdaptiveKLController",
    "aggregate_loss",
    "aggregation_units",
    "bradley_terry_loss",
    "clipped_surrogate",
    "clipped_value_loss",
    "discounted_returns",
    "dpo_loss",
    "group_advantages",
    "kl_estimate",
    "kl_penalised_rewards",
    "kl_shaped_rewards",
    "leave_one_out_advantages",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "pro_loss",
    "rrhf_loss",
    "sft_loss",
]

# -- masked statistics --------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over ``dim``, or all elements); 0 when nothing is masked in."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked elements (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, *, mean_var: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + 1e-8)`` over the masked elements, zero where masked.

    ``shift_mean=False`` keeps the mean (reward whitening in PPO). ``mean_var``: the statistics to
    use instead of ``x``'s own (``distributed.global_masked_whiten`` passes those of every rank).
    A 1-D ``x`` with ``mask = ones`` whitens a vector of per-sequence values (RLOO's advantages).
    """
    mean, var = mean_var if mean_var is not None else (masked_mean(x, mask), masked_var(x, mask))
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


# -- KL to the reference ------------------------------------------------------------------------

#: Schulman's estimators of ``KL(policy || ref)`` from samples of the policy (http://joschu.net/blog/kl-approx.html)
KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor | None = None, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of ``KL(policy || ref)`` at the sampled tokens, zero where masked.

    With ``d = logprobs - ref_logprobs`` (the log-ratio policy / reference):

    - ``k1 = d``: unbiased, can be negative per token; PPO's and RLOO's reward penalty
      (Ziegler et al. 2019) and the logged ``kl/seq``;
    - ``k2 = d^2 / 2``: biased, low variance, its gradient is that of the reverse KL's second-order term;
    - ``k3 = exp(-d) - 1 + d``: unbiased, always >= 0, lower variance than k1; GRPO puts it in
      the loss (Shao et al. 2024, eq. 4).

    Gradients flow through ``logprobs``. Shapes: ``logprobs``, ``ref_logprobs``, ``mask`` ``(b, R)``.
    """
    d = logprobs - ref_logprobs
    if kind == "k1":
        kl = d
    elif kind == "k2":
        kl = 0.5 * d**2
    elif kind == "k3":
        kl = torch.expm1(-d) + d
    else:
        raise ValueError(f"KL estimator {kind!r}: use one of {', '.join(KL_ESTIMATORS)}")
    return kl if mask is None else kl * mask


def kl_shaped_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef * kl`` everywhere, plus the sequence score on the last real token.

    Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593, §2.2), as PPO and REINFORCE use it.
    Shapes: ``scores`` ``(b,)``; ``kl``, ``mask`` ``(b, R)``. Returns ``(b, R)``, zero where masked.
    """
    rewards = -kl_coef * kl * mask
    last = (mask.cumsum(1) * mask).argmax(1)  # index of the last real token, (b,)
    has_any = mask.sum(1) > 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has_any]
    rewards[rows, last[has_any]] += scores[has_any]
    return rewards


def kl_penalised_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence rewards: the score minus ``kl_coef`` times the summed per-token k1 KL.

    ``r = score - kl_coef * sum_t (logp_t - logp_ref_t)`` over the response's real tokens, the
    penalty TRL's ``RLOOTrainer`` applies before the leave-one-out baseline.

    Shapes: ``scores`` ``(b,)``; ``logprobs``, ``ref_logprobs``, ``mask`` ``(b, R)``.
    Returns ``(rewards, seq_kl)``, both ``(b,)``.
    """
    seq_kl = kl_estimate(logprobs, ref_logprobs, mask, "k1").sum(1)  # (b,)
    return scores - kl_coef * seq_kl, seq_kl


@dataclass
class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, §2.2).

    ``coef`` is scaled by ``1 + clip((kl - target) / target, ±0.2) * n_steps / horizon`` after
    each step; with ``target=None`` the coefficient stays fixed.
    """

    coef: float
    target: float | None = None
    horizon: int = 10000

    def update(self, kl: float, n_steps: int) -> None:
        if self.target is None or not math.isfinite(kl):
            return
        err = max(-0.2, min(0.2, kl / self.target - 1.0))
        self.coef *= 1.0 + err * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.coef = float(state["coef"])


# -- advantages ---------------------------------------------------------------------------------


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(b,)`` -> ``(b // G, G)``, checking that whole groups were given."""
    if rewards.dim() != 1 or group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"expected a 1-D tensor of whole groups of {group_size}; got shape {tuple(rewards.shape)}")
    return rewards.view(-1, group_size)


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's outcome advantages: each reward minus its group's mean, over the group's std when ``scale``.

    ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)`` (Shao et al. 2024, §4.1.2), with the
    unbiased std as TRL's ``GRPOTrainer`` computes it. ``scale=False`` is Dr. GRPO (Liu et al.
    2025, https://arxiv.org/abs/2503.20783), which drops the division because it up-weights
    prompts that are nearly always solved or always failed. A group of identical rewards gets 0.

    Args:
        rewards: Sequence rewards, the ``G`` samples of each prompt contiguous. Shape ``(b,)``.
        group_size: ``G``, samples per prompt; ``b`` must be a multiple of it.
        scale: Divide by the group's standard deviation.
        eps: Added to the std, so that a group of equal rewards does not divide by zero.

    Returns:
        Advantages. Shape ``(b,)``.
    """
    g = _grouped(rewards, group_size)  # (b/G, G)
    centred = g - g.mean(1, keepdim=True)
    if scale:
        std = g.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(g[:, :1])  # (b/G, 1)
        denom = std + eps
        centred = torch.where(denom > 0, centred / denom.clamp(min=torch.finfo(g.dtype).tiny), torch.zeros_like(centred))
    return centred.reshape(-1)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO's advantages: each reward minus the mean of the *other* samples of its prompt.

    ``A_i = r_i - 1/(G-1) * sum_{j != i} r_j`` (Kool et al. 2019; Ahmadian et al. 2024, eq. 4). The
    baseline does not depend on ``r_i``, so the estimator stays unbiased; it equals
    ``G/(G-1) * (r_i - mean(r_group))``.

    Args:
        rewards: Sequence rewards, the ``G`` samples of each prompt contiguous. Shape ``(b,)``.
        group_size: ``G >= 2``.

    Returns:
        Advantages. Shape ``(b,)``.
    """
    if group_size < 2:
        raise ValueError(f"the leave-one-out baseline needs at least 2 samples per prompt; got {group_size}")
    g = _grouped(rewards, group_size)  # (b/G, G)
    baseline = (g.sum(1, keepdim=True) - g) / (group_size - 1)  # (b/G, G), mean of the others
    return (g - baseline).reshape(-1)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go ``G_t = sum_{l >= t} gamma^(l - t) * r_l`` over the real tokens of each response.

    Computed by :func:`alignfw.ops.gae` with zero values and ``lam = 1`` (then the GAE advantage
    is the discounted return), so it runs in the same Rust loop and honours holes in ``mask`` the
    same way.

    Shapes: ``rewards``, ``mask`` ``(b, R)``. Returns ``(b, R)``, zero where masked.
    """
    advantages, _ = gae(rewards, torch.zeros_like(rewards), mask, gamma=gamma, lam=1.0)
    return advantages


# -- policy-gradient losses ---------------------------------------------------------------------


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) as an unreduced per-element loss.

    ``max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))`` with
    ``ratio = exp(logprobs - old_logprobs)``. ``clip_high`` defaults to ``clip_low``; a larger one is
    DAPO's "clip-higher" (Yu et al. 2025, https://arxiv.org/abs/2503.14476). ``clip_low=inf``
    disables clipping: at ``ratio = 1`` the gradient is exactly REINFORCE's ``-A * grad logprobs``.
    Reduce the result with :func:`aggregate_loss`. Works per token ``(b, R)`` or per sequence ``(b, 1)``.

    Returns:
        ``(loss, stats)``: ``loss`` shaped like ``logprobs``, zero where masked; ``stats`` holds the
        detached ``ratio`` and ``clipped`` (1 where the clipped branch was taken) tensors.
    """
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = log_ratio.exp()
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(loss_unclipped, loss_clipped) * mask
    return loss, {"ratio": ratio.detach(), "clipped": (loss_clipped > loss_unclipped).float() * mask}


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: ``0.5 * max((v - R)^2, (clip(v, v_old ± clip) - R)^2)``, token mean. Shapes ``(b, R)``."""
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    l1 = (values - returns) ** 2
    l2 = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), mask)
    with torch.no_grad():
        stats = {"loss/value": loss.item(), "value/clipfrac": masked_mean((l2 > l1).float(), mask).item()}
    return loss, stats


#: ``"token"``: mean over every response token of the batch (DAPO, TRL's default);
#: ``"sequence"``: mean over each response's tokens, then over responses (the GRPO paper).
LOSS_AGGREGATIONS = ("token", "sequence")


def aggregation_units(mask: torch.Tensor, mode: str) -> torch.Tensor:
    """What each sequence adds to :func:`aggregate_loss`'s denominator: its token count
    (``"token"``) or 1 if it has any token (``"sequence"``). Shape ``(b,)``. Summed over a
    micro-batch, these are its units for :func:`alignfw.optim.accumulation_weights`."""
    lengths = mask.sum(1)
    if mode == "token":
        return lengths
    if mode == "sequence":
        return (lengths > 0).to(mask.dtype)
    raise ValueError(f"loss aggregation {mode!r}: use one of {', '.join(LOSS_AGGREGATIONS)}")


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce a per-token loss ``(b, R)`` to a scalar.

    ``"token"`` weighs every token equally, so long responses count more (DAPO, Yu et al. 2025);
    ``"sequence"`` weighs every response equally, so each token of a long response counts less,
    a length bias Dr. GRPO points out (GRPO paper, eq. 3). Responses with no tokens count in neither.
    """
    if mode == "token":
        return masked_mean(per_token, mask)
    if mode == "sequence":
        lengths = mask.sum(1)  # (b,)
        per_seq = (per_token * mask).sum(1) / lengths.clamp(min=1)  # (b,)
        return per_seq.sum() / (lengths > 0).sum().clamp(min=1)
    raise ValueError(f"loss aggregation {mode!r}: use one of {', '.join(LOSS_AGGREGATIONS)}")


# -- likelihood, preference and ranking losses --------------------------------------------------


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over the response tokens of the whole batch.

    Every token counts equally (TRL and torchtune do the same), so long responses weigh more
    than short ones. Shapes: ``logprobs``, ``mask`` ``(b, R)``. Returns a scalar.
    """
    return -(logprobs * mask).sum() / mask.sum().clamp(min=1)


#: DPO's loss types: ``sigmoid`` (DPO; cDPO with label smoothing) and ``ipo``
DPO_LOSS_TYPES = ("sigmoid", "ipo")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO / cDPO / IPO loss from sequence log-probs (Rafailov et al. 2023; TRL's ``DPOTrainer.dpo_loss``).

    With ``h = (pi_w - ref_w) - (pi_l - ref_l)``: ``sigmoid`` is
    ``-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)`` (cDPO when ``eps > 0``);
    ``ipo`` is ``(h - 1 / (2 beta))^2`` (Azar et al. 2023, eq. 17; pass length-averaged log-probs).

    Shapes: all inputs ``(b,)``. Returns the mean loss (scalar) and the implicit rewards
    ``beta * (policy - ref)`` of chosen and rejected, ``(b,)`` each, detached.
    """
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # (b,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ConfigError(f"algo.loss_type={loss_type!r}; choose one of {', '.join(DPO_LOSS_TYPES)}")
    rewards_chosen = beta * (policy_chosen - ref_chosen).detach()
    rewards_rejected = beta * (policy_rejected - ref_rejected).detach()
    return losses.mean(), rewards_chosen, rewards_rejected


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean(-log sigmoid(r_w - r_l))`` and the fraction of pairs with ``r_w > r_l``. Shapes ``(n,)``.

    The reward-model loss of Ouyang et al. 2022 (§3.5), a Bradley-Terry model of preferences.
    """
    margin = chosen - rejected  # (n,)
    return -F.logsigmoid(margin).mean(), (margin > 0).float().mean()


def rrhf_loss(scores: torch.Tensor) -> torch.Tensor:
    """RRHF's ranking loss (Yuan et al. 2023, eq. 2): ``sum_{i < j} max(0, p_j - p_i)`` per record, averaged.

    ``scores`` ``(b, k)`` are the answers' length-normalised log-probs, best first (answer ``i``
    ranks above ``j`` when ``i < j``). Returns a scalar.
    """
    diff = scores.unsqueeze(1) - scores.unsqueeze(2)  # diff[b, i, j] = p_j - p_i, (b, k, k)
    k = scores.shape[1]
    above = torch.ones(k, k, dtype=torch.bool, device=scores.device).triu(1)  # i < j: i is better
    return (diff.clamp(min=0) * above).sum((1, 2)).mean()


def pro_loss(scores: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """PRO's list-wise loss (Song et al. 2023, eq. 6): ``-sum_{k<n} log softmax(p_k.. p_n / T)[0]``, averaged.

    The Plackett-Luce negative log-likelihood of the given order. ``scores`` ``(b, n)``, best
    first. Returns a scalar.
    """
    s = scores / temperature  # (b, n)
    # log sum_{i >= k} exp(s_i) for each k: a reversed cumulative logsumexp, (b, n)
    tail = torch.logcumsumexp(s.flip(1), dim=1).flip(1)
    return -(s - tail)[:, :-1].sum(1).mean()  # the last term is log 1 = 0
