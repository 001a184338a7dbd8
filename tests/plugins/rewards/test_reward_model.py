"""A learned reward model scores prompt+response; PPO trains against it like any reward."""

from __future__ import annotations

import pytest
import torch

from alignfw.exceptions import ConfigError
from alignfw.plugins.rewards.reward_model import RewardModel, RewardModelConfig


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    from alignfw.models import resolve_model_path

    path = tmp_path_factory.mktemp("rm")
    tok = AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny"))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2, num_labels=1, pad_token_id=tok.pad_token_id)
    GPT2ForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_scores_match_a_direct_forward(rm_dir):
    rm = RewardModel(RewardModelConfig(path=str(rm_dir), shift=0.5, scale=2.0, batch_size=2))
    prompts, responses = ["translate: cat =", "translate: big dog ="], [" nyan", " mago vauv"]
    got = rm(prompts, responses, [])
    for i, (p, r) in enumerate(zip(prompts, responses)):
        enc = rm.tokenizer.hf(p + r, return_tensors="pt")
        want = (rm.model(**enc).logits[0, 0] - 0.5) * 2.0
        torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-5)  # padding must not change a score


def test_rust_and_hugging_face_tokenizers_score_alike(rm_dir):
    fast = RewardModel(RewardModelConfig(path=str(rm_dir), max_length=12))
    slow = RewardModel(RewardModelConfig(path=str(rm_dir), max_length=12, fast_tokenizer=False))
    assert fast.tokenizer.fast is not None and slow.tokenizer.fast is None
    prompts, responses = ["translate: cat =", "translate: big red dog and a small cat =" * 3], [" nyan", " mago vauv <|endoftext|>"]
    assert torch.equal(fast(prompts, responses, []), slow(prompts, responses, []))


def test_missing_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match="reward.path"):
        RewardModel(RewardModelConfig())
    with pytest.raises(ConfigError, match="does not exist"):
        RewardModel(RewardModelConfig(path=str(tmp_path / "nope")))


def test_ppo_trains_against_a_reward_model(builtin_plugins, rm_dir, tmp_path):
    from alignfw._hydra import named_config
    from alignfw.config import AlignfwConfig
    from alignfw.pipeline import run

    reg = builtin_plugins
    cfg = AlignfwConfig()
    cfg.model = named_config(reg.get("model", "hf_causal_lm").config, "hf_causal_lm")()
    cfg.data = named_config(reg.get("data", "tiny_task").config, "tiny_task")(n_train=32, n_eval=8)
    cfg.reward = named_config(RewardModelConfig, "reward_model")(path=str(rm_dir))
    cfg.algo = named_config(reg.get("algorithm", "ppo").config, "ppo")(lr=1e-3, ppo_epochs=1, minibatch_size=4)
    cfg.run.steps, cfg.run.batch_size, cfg.run.eval_size, cfg.run.progress = 2, 8, 8, False
    summary = run(cfg, tmp_path / "run")
    assert summary["steps"] == 2 and "eval/reward" in summary["final"]
