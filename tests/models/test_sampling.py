"""Seeded sampling (alignfw.models.sampling): exact in distribution, and each row's tokens depend
on its seed and its own logits only, never on the rows sampled beside it."""

from __future__ import annotations

import math

import pytest
import torch

from alignfw.models.sampling import SeededSampler, mix, seeded_warpers, uniforms
from alignfw.plugins.models.hf import HFModelConfig, build_hf_model
from alignfw.rollout import record_seeds, sampling_stream


def draw(scores: torch.Tensor, seeds: list[int], t: int = 0) -> torch.Tensor:
    """The token each row of ``scores`` ``(b, V)`` gets at generated position ``t``."""
    s = SeededSampler(seeds)
    s.start = 0
    out = s(torch.zeros(scores.shape[0], t, dtype=torch.long), scores)
    assert bool((out.max(1).values == 0).all()) and bool((out == 0).sum(1).eq(1).all())  # one token left per row
    return out.argmax(1)


def test_samples_follow_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    p = torch.softmax(logits, 0)
    n = 40_000
    tokens = draw(logits.expand(n, -1).clone(), [mix(7, i) for i in range(n)])
    counts = torch.bincount(tokens, minlength=5).double()
    sd = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() <= 5 * sd).all(), (counts / n, p)  # 5 sigma per token
    # every position t is a fresh draw: the same seeds at another t give other tokens
    again = draw(logits.expand(n, -1).clone(), [mix(7, i) for i in range(n)], t=1)
    assert (again != tokens).float().mean() > 0.3


def test_filtered_tokens_are_never_drawn():
    logits = torch.randn(2000, 50, generator=torch.Generator().manual_seed(0))
    procs = seeded_warpers(0.7, 5, 0.9, [mix(1, i) for i in range(2000)])
    procs[-1].start = 0
    out = procs(torch.zeros(2000, 0, dtype=torch.long), logits.clone())
    tokens = out.argmax(1)
    top5 = logits.topk(5, dim=1).indices
    assert bool((tokens.unsqueeze(1) == top5).any(1).all())


def test_uniforms_are_uniform_and_differ_by_seed_and_position():
    seeds = torch.tensor([mix(3, i) for i in range(20_000)])
    u = uniforms(seeds, 0)
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    v = uniforms(seeds, 1)
    assert abs(float(torch.corrcoef(torch.stack([u, v]))[0, 1])) < 0.05
    assert mix(1, 2) != mix(2, 1) and mix(1, 2, 3) != mix(1, 2) and mix(-1) == mix(2**64 - 1)


def test_a_row_samples_the_same_alone_or_in_a_batch():
    model = build_hf_model(HFModelConfig())
    prompts = ["translate: big cat =", "translate: the very small red dog runs =", "translate: dog ="]
    seeds = [mix(11, i) for i in range(len(prompts))]
    kw = dict(max_new_tokens=10, temperature=1.0, top_k=20, top_p=0.95)
    batch = model.generate(prompts, seeds=seeds, **kw).responses
    alone = [model.generate([p], seeds=[s], **kw).responses[0] for p, s in zip(prompts, seeds)]
    assert batch == alone  # other padding, other neighbours: the same tokens
    torch.manual_seed(123)  # the global generator plays no part
    assert model.generate(prompts[::-1], seeds=seeds[::-1], **kw).responses == batch[::-1]
    other = model.generate(prompts, seeds=[mix(12, i) for i in range(3)], **kw).responses
    assert other != batch
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        model.generate(prompts, seeds=seeds[:2], **kw)


def test_record_seeds_are_a_function_of_step_and_global_index():
    with sampling_stream(5, stream=3, offset=0):
        whole = record_seeds(8)
        second_draw = record_seeds(8)
    halves = []
    for rank in (0, 1):
        with sampling_stream(5, stream=3, offset=4 * rank):
            halves += record_seeds(4)
    assert halves == whole and second_draw != whole and len(set(whole)) == 8
    with sampling_stream(5, stream=4):
        assert record_seeds(8) != whole
    torch.manual_seed(0)
    free = record_seeds(3)  # outside a stream: from torch's generator
    torch.manual_seed(0)
    assert record_seeds(3) == free and record_seeds(3) != free
    assert all(0 <= s < 2**63 for s in free) and not math.isnan(sum(free))
