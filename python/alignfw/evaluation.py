"""Held-out evaluation: of a policy by its rollouts (reward, KL, length), of any loss by the same
micro-batch walk as training, without gradients, and the sample completions a person reads
(:func:`sample_completions`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from alignfw.config import RolloutConfig
from alignfw.models.chat import render_records
from alignfw.objectives import kl_estimate
from alignfw.optim import micro_batches
from alignfw.rollout import EVAL_STREAM, compute_rewards, record_seeds, rollout, row_seeds, sampling_stream, score_rollout
from alignfw.types import Record

if TYPE_CHECKING:
    from alignfw.models import PolicyModel

__all__ = ["evaluate_batches", "evaluate_policy", "reference_perplexity", "sample_completions"]


@torch.no_grad()
def evaluate_policy(
    model: PolicyModel,
    reward: Callable[..., Any],
    records: list[Record],
    cfg: RolloutConfig,
    *,
    ref: Any = None,
    temperature: float | None = None,
    batch_size: int = 128,
) -> dict[str, float]:
    """Sample one response per record (``cfg.eval_temperature`` or the training temperature)
    and return ``eval/reward``, ``eval/kl`` (sequence-level k1, to ``ref``), ``eval/length`` (tokens),
    and, where the records have reference responses, :func:`reference_perplexity`.

    ``temperature``: the one log-probs are scored at (the algorithm's); default the sampling one.
    """
    temp = cfg.eval_temperature if cfg.eval_temperature is not None else cfg.temperature
    score_temp = temperature if temperature is not None else max(temp, 1e-6)
    rewards, kls, lengths = [], [], []
    seeds = record_seeds(len(records))  # one draw for all batches: the samples do not depend on batch_size
    was_training = model.lm.training
    for i in range(0, len(records), batch_size):
        ro = rollout(model, reward, records[i : i + batch_size], cfg, temperature=temp, seeds=seeds[i : i + batch_size])
        rewards.append(ro.scores)
        lengths.append(ro.lengths)
        if ref is not None:
            lp = score_rollout(model, ro.gen, temperature=score_temp, ref=ref)
            kls.append(kl_estimate(lp["logprobs"], lp["ref_logprobs"], ro.mask, "k1").sum(1))
    out = {"eval/reward": torch.cat(rewards).mean().item(), "eval/length": torch.cat(lengths).mean().item()}
    if kls:
        out["eval/kl"] = torch.cat(kls).mean().item()
    out.update(reference_perplexity(model, records, batch_size=batch_size))
    model.lm.train(was_training)
    return out


def _reference(rec: Record) -> str | None:
    if rec.response:
        return rec.response
    return rec.references[0] if rec.references else None


@torch.no_grad()
def reference_perplexity(model: PolicyModel, records: Sequence[Record], *, batch_size: int = 128) -> dict[str, float]:
    """The policy's ``eval/nll`` (nats per token, exact token mean) and ``eval/perplexity`` on the
    records' reference responses (``response``, else the first of ``references``), each followed by
    EOS; ``{}`` when no record has one. The check that alignment did not wreck the language model:
    a policy that games its reward drifts away from text people wrote."""
    pairs = [(r.prompt, ref) for r in render_records(records, model.tokenizer) if (ref := _reference(r))]
    if not pairs:
        return {}
    model.lm.eval()
    nll, tokens = 0.0, 0.0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        gen = model.encode_pairs([p for p, _ in chunk], [r for _, r in chunk])
        logprobs = model.score(gen, temperature=1.0)["logprobs"].float()  # (b, R), 0 where masked
        nll -= float(logprobs.sum())
        tokens += float(gen.response_mask.sum())
    mean = nll / tokens
    return {"eval/nll": mean, "eval/perplexity": math.exp(min(mean, 50.0))}


@torch.no_grad()
def evaluate_batches(
    loss_fn: Callable[[Sequence[Record]], tuple[torch.Tensor, dict[str, float]]],
    records: list[Record],
    *,
    micro_batch_size: int,
    modules: Sequence[torch.nn.Module],
) -> dict[str, float]:
    """``loss_fn`` over ``records`` in eval mode without gradients.

    Returns ``eval/loss`` and each stat as ``eval/<name>``, averaged with weights by record count.
    """
    if not records:
        return {}
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    acc: dict[str, float] = {}
    try:
        for mb in micro_batches(records, micro_batch_size):
            w = len(mb) / len(records)
            loss, stats = loss_fn(mb)
            for k, v in {"loss": loss.item(), **stats}.items():
                acc[f"eval/{k}"] = acc.get(f"eval/{k}", 0.0) + w * v
    finally:
        for m, t in zip(modules, was):
            m.train(t)
    return acc


@torch.no_grad()
def sample_completions(
    model: PolicyModel, reward: Callable[..., Any] | None, records: Sequence[Record], cfg: RolloutConfig, *, seed: int
) -> list[dict[str, Any]]:
    """One response per record at the evaluation temperature, for people to read.

    The records are taken as the first held-out records, sampled with the seeds the evaluation
    gives them (:data:`alignfw.rollout.EVAL_STREAM`): the samples are the responses the evaluation
    scored, the same prompts get comparable draws at every evaluation, and training's random
    stream is untouched (a run trains the same with or without them). Each sample is
    ``{"prompt", "response", "length"}`` (response tokens) plus, with a reward, ``"reward"`` and
    ``"rewards"``: the score of each part of a fused reward (``combine``'s ``parts``) by name.
    """
    if not records:
        return []
    recs = render_records(records, model.tokenizer)
    prompts = [r.prompt for r in recs]
    temp = cfg.eval_temperature if cfg.eval_temperature is not None else cfg.temperature
    with sampling_stream(seed, EVAL_STREAM):
        seeds = row_seeds(record_seeds(len(recs)), 1)
    was_training = model.lm.training
    model.lm.eval()
    try:
        gen = model.generate(
            prompts, max_new_tokens=cfg.max_new_tokens, temperature=temp, top_k=cfg.top_k, top_p=cfg.top_p,
            stop_strings=cfg.stop_strings, seeds=seeds,
        )  # fmt: skip
    finally:
        model.lm.train(was_training)
    lengths = gen.response_mask.sum(1).tolist()
    out = [{"prompt": str(p), "response": str(r), "length": int(n)} for p, r, n in zip(prompts, gen.responses, lengths)]
    if reward is not None:
        total = compute_rewards(reward, prompts, gen.responses, recs, torch.device("cpu")).tolist()
        parts = {name: compute_rewards(fn, prompts, gen.responses, recs, torch.device("cpu")).tolist() for name, _, fn in getattr(reward, "parts", [])}
        for i, sample in enumerate(out):
            sample["reward"] = total[i]
            sample["rewards"] = {name: scores[i] for name, scores in parts.items()}
    return out
