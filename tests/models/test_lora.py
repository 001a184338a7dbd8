"""LoRA on the policy (``model.lora.*``, issue #9): the reference is the policy with its adapters
disabled (no second copy of the weights), only adapters and the value head reach the optimizer,
every algorithm trains the adapters and never the base weights, ``final/`` holds an adapter that
peft loads (and a merged model that plain transformers loads), and a resumed LoRA run is exact.

A tiny random Llama (real architecture, the built-in tokenizer) stands in for a real model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import demo_trainer, run_cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignfw.exceptions import ConfigError
from alignfw.models import forward_hidden, response_logprobs
from alignfw.models.adapters import AdapterFreeReference, LoraOptions
from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

peft = pytest.importorskip("peft")

ALGOS = ["dpo", "grpo", "ppo", "reinforce", "reward_model", "rloo", "sft", "sft_ranking"]
PROMPTS = ["translate: cat 1 =", "translate: dog 22 ="]
RESPONSES = [" nyan 1 koru", " wan wan"]


def _lora(**kw) -> LoraOptions:
    return LoraOptions(enabled=True, r=4, alpha=8.0, **kw)


def _model(path: str, **lora):
    return build_hf_model(HFModelConfig(path=path, fast_tokenizer=False, lora=_lora(**lora)))


def _perturb_adapters(lm) -> None:
    """Give every LoRA B a non-zero value (fresh adapters are B = 0: the policy equals the base)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _param_bytes(*modules) -> int:
    """Bytes of the distinct parameter storages the modules hold (shared storage counted once)."""
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            seen[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    return sum(seen.values())


def _logprobs(lm, model) -> torch.Tensor:
    """Log-probs of RESPONSES (the policy's tokens of them) under ``lm`` through its own logits:
    a plain transformers model, a peft model, ... (nothing of alignfw's scoring)."""
    gen = model.encode_pairs(PROMPTS, RESPONSES)
    pos = (gen.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = lm(input_ids=gen.sequences, attention_mask=gen.attention_mask, position_ids=pos).logits.float()
    P = gen.prompt_len
    lp = torch.log_softmax(logits[:, P - 1 : -1], -1).gather(-1, gen.response_ids[..., None])[..., 0]  # (b, R)
    return lp[gen.response_mask.bool()]


def _policy_logprobs(model, lm=None) -> torch.Tensor:
    with torch.no_grad():
        lp = response_logprobs(model, PROMPTS, RESPONSES, lm=lm)
    return lp["token"][lp["mask"].bool()]


# -- the reference, the optimizer, scoring ------------------------------------------------------


def test_reference_is_the_policy_with_adapters_disabled_and_copies_no_weight(tiny_llama):
    model = _model(tiny_llama)
    before = _param_bytes(model.lm)
    ref = model.make_reference()
    assert isinstance(ref, AdapterFreeReference)
    assert list(ref.parameters()) == [] and ref.state_dict() == {}  # nothing of its own to hold or checkpoint
    assert _param_bytes(model.lm, ref) == before
    _perturb_adapters(model.lm)
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama)
    torch.testing.assert_close(_policy_logprobs(model, lm=ref), _logprobs(plain, model), rtol=1e-5, atol=1e-5)
    # the policy itself scores with its adapters: through peft's own forward, not the base model's
    policy = _policy_logprobs(model)
    torch.testing.assert_close(policy, _logprobs(model.lm, model), rtol=1e-5, atol=1e-5)
    assert (policy - _policy_logprobs(model, lm=ref)).abs().max() > 1e-3


def test_forward_hidden_of_a_peft_model_is_the_backbone_with_adapters(tiny_llama):
    model = _model(tiny_llama)
    _perturb_adapters(model.lm)
    ids = torch.tensor([[1, 5, 9, 30], [0, 0, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    h = forward_hidden(model.lm, ids, mask)
    assert h.shape == (2, 4, 64)
    out = model.lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), output_hidden_states=True)
    torch.testing.assert_close(h, out.hidden_states[-1])
    with model.lm.disable_adapter():
        assert (forward_hidden(model.lm, ids, mask) - h).abs().max() > 1e-4


def test_only_adapters_and_value_head_reach_the_optimizer(builtin_plugins, tmp_path, tiny_llama):
    t = demo_trainer(builtin_plugins, tmp_path, "ppo", model={"path": tiny_llama, "lora": _lora()}, batch_size=4, eval_size=0)
    model = t.model
    optimized = {id(p) for g in t.algo.optimizer.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.lm.named_parameters()}
    head = {id(p) for p in model.value_head.parameters()}
    assert head <= optimized
    adapters = {i for i, n in names.items() if "lora_" in n}
    assert adapters and optimized - head == adapters
    assert not any(p.requires_grad for n, p in model.lm.named_parameters() if "lora_" not in n)


def test_ppo_with_lora_holds_one_copy_of_the_weights(builtin_plugins, tmp_path, tiny_llama):
    """Parameter bytes held by PPO's policy + reference + value head: full fine-tuning keeps a second
    (frozen) copy of the network; LoRA keeps the base once plus the adapters."""
    full = demo_trainer(builtin_plugins, tmp_path / "full", "ppo", model={"path": tiny_llama}, batch_size=4, eval_size=0).model
    lora = demo_trainer(builtin_plugins, tmp_path / "lora", "ppo", model={"path": tiny_llama, "lora": _lora()}, batch_size=4, eval_size=0).model
    base = _param_bytes(AutoModelForCausalLM.from_pretrained(tiny_llama))
    full_bytes = _param_bytes(full.lm, full.ref, full.value_head)
    lora_bytes = _param_bytes(lora.lm, lora.ref, lora.value_head)
    adapter_bytes = sum(p.numel() * p.element_size() for n, p in lora.lm.named_parameters() if "lora_" in n)
    head_bytes = _param_bytes(lora.value_head)
    assert full_bytes == 2 * base + head_bytes
    assert lora_bytes == base + adapter_bytes + head_bytes
    print(f"PPO parameter bytes: full {full_bytes}, LoRA {lora_bytes} (base {base}, adapters {adapter_bytes})")


def test_adapters_get_gradients_under_gradient_checkpointing(tiny_llama):
    model = build_hf_model(HFModelConfig(path=tiny_llama, fast_tokenizer=False, gradient_checkpointing=True, lora=_lora()))
    _perturb_adapters(model.lm)  # A's gradient is B^T (...): zero while B = 0
    model.lm.train()
    lp = response_logprobs(model, PROMPTS, RESPONSES)
    (-lp["sum"].sum()).backward()
    grads = [p.grad for n, p in model.lm.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


# -- every algorithm ----------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_trains_the_adapters_and_not_the_base(builtin_plugins, tmp_path, tiny_llama, algo):
    opts = {}
    fields = {f.name for f in dataclasses.fields(builtin_plugins.get("algorithm", algo).config)}
    if "warmup_steps" in fields:  # a warm-up would start at lr 0
        opts["warmup_steps"] = 0
    if "lr" in fields:
        opts["lr"] = 1e-2
    t = demo_trainer(
        builtin_plugins, tmp_path, algo, algo=opts, model={"path": tiny_llama, "lora": _lora()}, steps=2, batch_size=4,
        eval_size=0, save_every=0,
    )  # fmt: skip
    if hasattr(t.algo, "reward"):  # a random model earns BLEU 0 everywhere: no advantage; its lengths differ
        t.algo.reward = lambda prompts, responses, records: torch.tensor([len(r) / 10.0 for r in responses])
    before = {n: p.detach().clone() for n, p in t.model.lm.named_parameters()}
    t.train()
    after = dict(t.model.lm.named_parameters())
    base = [n for n in before if "lora_" not in n]
    adapters = [n for n in before if "lora_" in n]
    assert base and adapters
    for n in base:
        assert torch.equal(before[n], after[n]), n
    if algo == "reward_model":  # trains a classifier built from the policy; the policy stays as it was
        assert all(torch.equal(before[n], after[n]) for n in adapters)
        assert (tmp_path / "final" / "config.json").is_file()
    else:
        assert any(not torch.equal(before[n], after[n]) for n in adapters)
        assert (tmp_path / "final" / "adapter_model.safetensors").is_file()


# -- saving, loading back, resuming -------------------------------------------------------------


def test_final_adapter_and_merged_model_load_back_with_the_trained_log_probs(builtin_plugins, tmp_path, tiny_llama):
    from peft import PeftModel

    t = demo_trainer(
        builtin_plugins, tmp_path, "sft", algo={"lr": 1e-2, "warmup_steps": 0}, model={"path": tiny_llama, "lora": _lora(merge=True)},
        steps=2, batch_size=4, eval_size=0,
    )  # fmt: skip
    t.train()
    final = tmp_path / "final"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in final.iterdir()}
    assert not (final / "model.safetensors").exists()  # the adapter, not the base weights
    trained = _policy_logprobs(t.model)
    assert (trained - _policy_logprobs(t.model, lm=t.model.make_reference())).abs().max() > 1e-3  # training moved it
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), final)
    torch.testing.assert_close(_logprobs(with_adapter, t.model), trained, rtol=1e-5, atol=1e-5)
    merged = AutoModelForCausalLM.from_pretrained(final / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert AutoTokenizer.from_pretrained(final / "merged").get_vocab() == t.model.tokenizer.get_vocab()
    torch.testing.assert_close(_logprobs(merged, t.model), trained, rtol=1e-4, atol=1e-4)


def test_resumed_lora_run_continues_exactly(builtin_plugins, tmp_path, tiny_llama):
    from safetensors.torch import load_file

    def trainer(name, steps, **run):
        return demo_trainer(
            builtin_plugins, tmp_path / name, "ppo", seed=3, algo={"lr": 1e-2, "ppo_epochs": 1, "minibatch_size": 4},
            model={"path": tiny_llama, "lora": _lora()}, steps=steps, batch_size=4, eval_size=4, eval_every=0, **run,
        )  # fmt: skip

    straight = trainer("a", 4).train()
    trainer("b", 2, save_every=2).train()
    ck = tmp_path / "b" / "checkpoints" / "step_00000002" / "model"
    assert (ck / "adapter_model.safetensors").is_file() and not (ck / "model.safetensors").exists()
    assert not (ck / "merged").exists()
    resumed = trainer("c", 4, resume=str(tmp_path / "b")).train()
    wa = load_file(str(tmp_path / "a" / "final" / "adapter_model.safetensors"))
    wc = load_file(str(tmp_path / "c" / "final" / "adapter_model.safetensors"))
    assert wa.keys() == wc.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wc[k], rtol=0, atol=0, msg=k)
    assert straight["final"] == resumed["final"]
    ma = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mc = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("loss/total") for m in ma if m["step"] > 2] == [m.get("loss/total") for m in mc if m["step"] > 2]


def _torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 -m alignfw ARGS`` (two CPU processes, gloo)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIGNFW_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_"))}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "alignfw", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_train_adapters_and_resume_exactly(tmp_path, tiny_llama, strategy):
    """PPO with LoRA on two processes: the adapters train, a checkpoint holds the adapter, and a
    run resumed at step 2 ends with the uninterrupted run's adapter."""
    from safetensors.torch import load_file

    common = [
        "+reward=bleu", "+algo=ppo", "model=hf_causal_lm", f"model.path={tiny_llama}", "model.lora.enabled=true", "model.lora.r=4",
        f"distributed.strategy={strategy}", "run.batch_size=4", "run.eval_size=0", "run.progress=false", "rollout.max_new_tokens=6",
        "algo.lr=1e-2", "algo.minibatch_size=2", "run.steps=4",
    ]  # fmt: skip
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    res = _torchrun(*common, "run.save_every=2", f"run.output_dir={full}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    ck = full / "checkpoints" / "step_00000002"
    assert (ck / "model" / "adapter_model.safetensors").is_file() and not (ck / "model" / "model.safetensors").exists()
    res = _torchrun(*common, f"run.resume={ck}", f"run.output_dir={resumed}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    a, b = load_file(str(full / "final" / "adapter_model.safetensors")), load_file(str(resumed / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    assert any(v.abs().max() > 0 for k, v in a.items() if "lora_B" in k)  # B starts at 0: the adapters trained
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: the resumed run diverged from the uninterrupted one"


# -- configuration and bad input ----------------------------------------------------------------


def test_lora_options_compose_from_the_command_line(hydra_compose):
    from omegaconf import OmegaConf

    cfg = hydra_compose("+algo=ppo", "model.lora.enabled=true", "model.lora.r=8", "model.lora.target_modules=[q_proj,v_proj]")
    lora = OmegaConf.to_object(cfg.model).lora
    assert isinstance(lora, LoraOptions)
    assert (lora.enabled, lora.r, lora.target_modules, lora.merge) == (True, 8, ["q_proj", "v_proj"], False)


@pytest.mark.slow
def test_plugins_command_lists_the_lora_options(tmp_path):
    out = run_cli("plugins", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "model.lora.r: int = 8" in out.stdout and "model.lora.target_modules" in out.stdout  # one line per option


def test_target_matching_no_module_names_the_option_and_the_candidates(tiny_llama):
    with pytest.raises(ConfigError, match=r"model\.lora\.target_modules.*'qkv_proj'.*q_proj, .*v_proj") as e:
        _model(tiny_llama, target_modules=["q_proj", "qkv_proj"])
    assert "lm_head" not in str(e.value)


def test_target_list_limits_the_adapters(tiny_llama):
    from alignfw.models.adapters import adapter_key_names, adapter_state_dict

    model = _model(tiny_llama, target_modules=["q_proj", "v_proj"])
    names = adapter_key_names(set(model.lm.state_dict()))
    assert names and set(names) == set(adapter_state_dict(model.lm))  # the names FSDP2 resume maps back
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in model.lm.named_parameters() if "lora_" in n}
    assert wrapped == {"q_proj", "v_proj"}


def test_lora_without_peft_names_the_pip_command(tiny_llama, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    with pytest.raises(ConfigError, match=r"model\.lora\.enabled.*pip install \"alignfw\[lora\]\""):
        _model(tiny_llama)
