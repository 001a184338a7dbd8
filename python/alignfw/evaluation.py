"""Evaluation of a policy on held-out prompts: mean reward, KL to the reference, response length."""

from __future__ import annotations

from typing import Any

import torch

from alignfw.rollout import compute_rewards
from alignfw.types import Record

__all__ = ["evaluate_policy"]


@torch.no_grad()
def evaluate_policy(model: Any, reward: Any, records: list[Record], rollout: Any, *, ref: Any = None, temperature: float | None = None, batch_size: int = 128) -> dict[str, float]:
    """Sample one response per record (``rollout.eval_temperature`` or the training temperature)
    and return ``eval/reward``, ``eval/kl`` (sequence-level, to ``ref``), ``eval/length`` (tokens)."""
    temp = rollout.eval_temperature if rollout.eval_temperature is not None else rollout.temperature
    score_temp = temperature if temperature is not None else max(temp, 1e-6)
    rewards, kls, lengths = [], [], []
    was_training = model.lm.training
    model.lm.eval()
    for i in range(0, len(records), batch_size):
        batch = records[i : i + batch_size]
        prompts = [r.prompt for r in batch]
        gen = model.generate(prompts, max_new_tokens=rollout.max_new_tokens, temperature=temp, top_k=rollout.top_k, top_p=rollout.top_p)
        rewards.append(compute_rewards(reward, prompts, gen.responses, batch, model.device))
        mask = gen.response_mask.float()
        lengths.append(mask.sum(1))
        if ref is not None:
            lp = model.score(gen, temperature=score_temp)["logprobs"].float()
            lp_ref = model.score(gen, temperature=score_temp, lm=ref)["logprobs"].float()
            kls.append(((lp - lp_ref) * mask).sum(1))
    model.lm.train(was_training)
    out = {"eval/reward": torch.cat(rewards).mean().item(), "eval/length": torch.cat(lengths).mean().item()}
    if kls:
        out["eval/kl"] = torch.cat(kls).mean().item()
    return out
