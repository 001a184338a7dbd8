"""The engine interface without vLLM: the default ``hf`` engine is the policy's generate, the shared
assembly of an engine's tokens follows ``CausalLM.generate``'s rules, the off-policy correction's
numbers, and the errors of a missing vLLM and of an unreachable or stuck server."""

from __future__ import annotations

import importlib.util
import socket
from dataclasses import dataclass

import pytest
import torch

from alignfw.config import RolloutConfig
from alignfw.engines import (
    EngineError,
    HFEngine,
    SampledGeneration,
    WeightFingerprints,
    engine_correction,
    engine_for,
    generation_from_tokens,
)
from alignfw.hookspecs import hookimpl
from alignfw.rollout import rollout
from alignfw.types import Record

PROMPTS = ["translate: cat =", "translate: dog dog =", "translate: a =", "translate: bird cat dog ="]


@pytest.fixture(scope="module")
def tiny():
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    return build_hf_model(HFModelConfig())


def test_default_engine_is_the_policys_generate(tiny, builtin_plugins, same_generation):
    for spec in (None, "hf"):
        assert isinstance(engine_for(tiny, RolloutConfig(engine=spec)), HFEngine)
    torch.manual_seed(0)
    ro = rollout(tiny, lambda p, r, recs: [0.0] * len(p), [Record(prompt=p) for p in PROMPTS], RolloutConfig(temperature=0.0))
    same_generation(ro.gen, tiny.generate(PROMPTS, max_new_tokens=16, temperature=0.0))
    assert ro.engine_logprobs is None  # the trainer sampled: nothing is off-policy


@pytest.mark.parametrize("stop_strings", [(), ("a",), ("at", "og")])
def test_generation_from_tokens_follows_generate(tiny, stop_strings, same_generation):
    """An engine's raw samples (which run on past stop strings, as vLLM's do without a tokenizer)
    become the very Generation that model.generate makes of the same tokens."""
    torch.manual_seed(1)
    ref = tiny.generate(PROMPTS, max_new_tokens=12, temperature=1.0, stop_strings=stop_strings)
    ids, mask = tiny.generation_prompts(PROMPTS, 12)
    assert torch.equal(ids, ref.sequences[:, : ref.prompt_len])
    rows = []
    for r, m in zip(ref.response_ids.tolist(), ref.response_mask.tolist()):
        n = sum(m)
        ended_on_eos = n and r[n - 1] in tiny.eos_token_ids
        rows.append(r[:n] + ([] if ended_on_eos else [5, 6, 7][: 12 - n]))  # an engine keeps sampling after a stop string
    gen = generation_from_tokens(tiny, ids, mask, rows, stop_strings, logprobs=[[-1.0] * len(r) for r in rows])
    same_generation(gen, ref)
    assert torch.equal(gen.logprobs, -ref.response_mask.float())  # 0 past each response


def test_fingerprints_see_optimizer_steps():
    """The fused AdamW step (alignfw.optim's) changes weights without bumping their version counters;
    the fingerprints still see exactly the updated ones."""
    from alignfw.optim import build_optimizer

    lm = torch.nn.Linear(3, 2)
    seen = WeightFingerprints()
    assert seen.changed(dict(lm.named_parameters())) == ["weight", "bias"]
    assert seen.changed(dict(lm.named_parameters())) == []
    opt = build_optimizer([lm.weight], lr=0.1, weight_decay=0.0, adam_eps=1e-8)
    lm(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert seen.changed(dict(lm.named_parameters())) == ["weight"]


def test_engine_correction():
    trainer = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    engine = torch.tensor([[-1.0, -1.0, -1.5], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    assert engine_correction(trainer, None, mask, 2.0) == (None, {})  # hf engine: nothing to correct
    w, stats = engine_correction(trainer, engine, mask, None)
    assert w is None and stats["engine/logprob_gap"] == pytest.approx((0 + 1 + 1 + 1 + 0) / 5)
    assert stats["engine/logprob_gap_max"] == pytest.approx(1.0)
    w, stats = engine_correction(trainer, engine, mask, 2.0)
    e = torch.e
    assert torch.allclose(w, torch.tensor([[1.0, 1 / e, 2.0], [2.0, 1.0, 0.0]]))  # e and e capped at 2, masked 0
    assert stats["engine/is_clipfrac"] == pytest.approx(2 / 5)
    w, _ = engine_correction(trainer, engine, mask, 2.0, level="sequence")
    assert torch.allclose(w, torch.tensor([1.0, 2.0]))  # exp(0 - 1 + 1) = 1; exp(1) capped
    with pytest.raises(Exception, match="tis_cap"):
        engine_correction(trainer, engine, mask, 0.0)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here: the error is for venvs without it")
def test_vllm_engine_without_vllm(tiny, builtin_plugins):
    with pytest.raises(EngineError, match=r"needs vLLM, which is not installed.*alignfw\[vllm\].*scripts/vllm_venv.sh"):
        rollout(tiny, lambda p, r, recs: [0.0] * len(p), [Record(prompt="a")], RolloutConfig(engine="vllm"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server(tiny, builtin_plugins):
    from alignfw.plugins.engines.vllm_server import VLLMServerConfig

    port = _free_port()
    cfg = RolloutConfig(engine=VLLMServerConfig(url=f"http://127.0.0.1:{port}", connect_timeout_s=2))
    with pytest.raises(EngineError, match=rf"no vLLM server answers at http://127.0.0.1:{port}.*vllm_server --model .* --port {port}"):
        rollout(tiny, lambda p, r, recs: [0.0] * len(p), [Record(prompt="a")], cfg)


def test_stuck_server_times_out(tiny, builtin_plugins):
    """A server that accepts connections and never answers ends in the timeout's error, not a hang."""
    from alignfw.plugins.engines.vllm_server import VLLMServerConfig

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)  # the kernel completes the handshake; nobody ever reads or answers
        port = srv.getsockname()[1]
        cfg = RolloutConfig(engine=VLLMServerConfig(url=f"http://127.0.0.1:{port}", connect_timeout_s=1))
        with pytest.raises(EngineError, match=r"did not answer GET /health within 1 s"):
            rollout(tiny, lambda p, r, recs: [0.0] * len(p), [Record(prompt="a")], cfg)


def test_engine_option_is_typed(compose_typed):
    from alignfw.plugins.engines.vllm import VLLMConfig

    cfg = compose_typed("+algo=grpo", "+reward=bleu", "rollout.engine=vllm", "rollout.engine.kv_cache_gib=2")
    assert isinstance(cfg.rollout.engine, VLLMConfig) and cfg.rollout.engine.kv_cache_gib == 2.0
    assert compose_typed("+algo=grpo", "+reward=bleu").rollout.engine is None  # the default: hf
    with pytest.raises(Exception, match="Could not override 'rollout.engine.kv_cach'") as err:
        compose_typed("+algo=grpo", "rollout.engine=vllm", "rollout.engine.kv_cach=2")
    assert "Key 'kv_cach' not in 'VLLMConfig'" in str(err.value.__cause__)


@dataclass
class OffsetConfig:
    offset: float = 0.1  #: the engine's log-probs are the trainer's minus this


class OffsetEngine:
    """Samples with the policy and reports log-probs ``offset`` below the trainer's: a known gap."""

    def __init__(self, cfg: OffsetConfig, ctx) -> None:
        self.cfg, self.model = cfg, ctx.model

    def generate(self, prompts, *, seeds=None, **sampling):
        gen = self.model.generate(prompts, **sampling)
        with torch.no_grad():
            lp = self.model.score(gen, temperature=sampling["temperature"])["logprobs"].float()
        fields = {f: getattr(gen, f) for f in ("sequences", "attention_mask", "response_mask", "prompt_len", "responses", "ended")}
        return SampledGeneration(**fields, logprobs=(lp - self.cfg.offset) * gen.response_mask)

    def sync_weights(self, model):
        pass

    def sleep(self):
        pass

    def wake(self):
        pass


class OffsetPlugin:
    @hookimpl
    def register_engines(self, register):
        register("offset", OffsetEngine, config=OffsetConfig)


@pytest.mark.parametrize("algo", ["ppo", "grpo", "rloo", "reinforce"])
def test_algorithms_report_the_gap_and_correct_for_it(algo, use_plugins, tmp_path):
    """With an engine 0.1 nats below the trainer on every token, each online algorithm logs that gap
    and, with tis_cap, weights its policy-gradient terms by min(e^0.1, cap)."""
    import importlib
    import tomllib

    from helpers import REPO, demo_trainer

    builtins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["alignfw"].values()
    reg = use_plugins(*[importlib.import_module(m) for m in builtins], OffsetPlugin())
    trainer = demo_trainer(reg, tmp_path, algo, algo={"tis_cap": 1.05}, steps=1, batch_size=4, eval_size=0)
    trainer.cfg.rollout.engine = OffsetConfig(offset=0.1)
    metrics = trainer.algo.step(trainer.train_records[:4])
    assert metrics["engine/logprob_gap"] == pytest.approx(0.1, abs=1e-4)
    if algo == "rloo":  # one weight per response, from the summed log-ratio: e^(0.1 * length) > 1.05
        assert metrics["engine/is_weight"] == pytest.approx(1.05) and metrics["engine/is_clipfrac"] == 1.0
    else:
        assert metrics["engine/is_weight"] == pytest.approx(1.05, abs=1e-4) and metrics["engine/is_clipfrac"] == 1.0
