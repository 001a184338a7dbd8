"""What a run leaves beside its final model: the best model by a held-out metric (``run.keep_best``,
``best/``), a model card in each saved folder, and held-out perplexity on reference responses."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from helpers import REPO, demo_trainer, run_cli
from safetensors.torch import load_file

from alignfw.evaluation import reference_perplexity
from alignfw.exceptions import ConfigError
from alignfw.pipeline import best_is_higher

TINY_WEIGHTS = REPO / "plugins" / "models" / "tiny" / "model.safetensors"


def test_best_model_is_the_best_evaluations_weights(builtin_plugins, tmp_path):
    """Evaluate after every step and checkpoint every step: best/ must hold exactly the weights of
    the step whose held-out reward was highest (the start model when no step beat it)."""
    t = demo_trainer(
        builtin_plugins, tmp_path / "run", "ppo", steps=4, batch_size=8, eval_size=8, eval_every=1, save_every=1,
        keep_checkpoints=10, keep_best="eval/reward",
    )  # fmt: skip
    summary = t.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval/reward"] for r in rows if "eval/reward" in r}
    assert sorted(evals) == [0, 1, 2, 3, 4]
    step = max(evals, key=lambda s: (evals[s], -s))  # the first of equal maxima is kept
    assert summary["best"]["step"] == step and summary["best"]["value"] == pytest.approx(evals[step])
    best = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    at_step = TINY_WEIGHTS if step == 0 else tmp_path / "run" / "checkpoints" / f"step_{step:08d}" / "model" / "model.safetensors"
    expected = load_file(str(at_step))
    for k in expected:
        assert torch.equal(best[k], expected[k]), k
    assert not list((tmp_path / "run").glob(".best*")) and not list((tmp_path / "run").glob(".final*"))
    card = (tmp_path / "run" / "best" / "README.md").read_text()
    assert f"step {step}" in card and "eval/reward" in card


def test_model_card_names_model_algorithm_reward_data_and_metrics(tmp_path):
    res = run_cli("+reward=bleu", "+algo=grpo", "run.steps=1", "run.batch_size=4", "run.eval_size=4", "rollout.max_new_tokens=4",
                  "run.progress=false", f"run.output_dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and "grpo" in front["tags"] and "base_model" not in front  # not a Hub model
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for text in ("`grpo`", "lr=", "`bleu`", "`tiny_task`", "built-in model `tiny`", "step 1", "eval/reward", "from_pretrained"):
        assert text in card, text
    assert f"{summary['final']['eval/reward']:.6g}" in card
    assert "best" not in summary  # run.keep_best is off by default


def test_keep_best_names_the_metrics_a_run_has(tmp_path):
    res = run_cli("+reward=bleu", "+algo=ppo", "run.steps=1", "run.batch_size=4", "run.eval_size=4", "run.keep_best=eval/rewrd",
                  "rollout.max_new_tokens=4", "run.progress=false", f"run.output_dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "run.keep_best=eval/rewrd is not a held-out metric" in res.stderr and "eval/reward" in res.stderr
    res = run_cli("+reward=bleu", "+algo=ppo", "run.eval_size=0", "run.keep_best=eval/reward", "run.progress=false",
                  f"run.output_dir={tmp_path / 'run2'}", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2 and "needs held-out evaluations" in res.stderr


@pytest.mark.parametrize(
    "metric, mode, higher",
    [("eval/reward", "auto", True), ("eval/kl", "auto", False), ("eval/perplexity", "auto", False), ("eval/loss/bt", "auto", False),
     ("eval/accuracy", "auto", True), ("eval/rewards/margins", "auto", True), ("eval/kl", "max", True), ("eval/reward", "min", False)],
)  # fmt: skip
def test_best_direction(metric, mode, higher):
    assert best_is_higher(metric, mode) is higher


def test_best_mode_must_be_known():
    with pytest.raises(ConfigError, match="run.best_mode=largest is not one of auto, max, min"):
        best_is_higher("eval/reward", "largest")


def test_reference_perplexity_is_the_token_mean_nll_whatever_the_batch(builtin_plugins, tmp_path):
    t = demo_trainer(builtin_plugins, tmp_path, "ppo", eval_size=6)
    recs = t.eval_records[:6]
    assert all(r.references for r in recs)
    whole = reference_perplexity(t.model, recs, batch_size=6)
    nll, n = 0.0, 0.0
    for r in recs:  # one record at a time, straight from the model's scores
        gen = t.model.encode_pairs([r.prompt], [r.references[0]])
        with torch.no_grad():
            nll -= float(t.model.score(gen)["logprobs"].sum())
        n += float(gen.response_mask.sum())
    assert whole["eval/nll"] == pytest.approx(nll / n, rel=1e-5)
    assert whole["eval/perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert reference_perplexity(t.model, recs, batch_size=4) == pytest.approx(whole, rel=1e-5)
    assert "eval/perplexity" in t.evaluate()


def test_model_card_of_a_lora_adapter_on_a_hub_model():
    from alignfw.model_card import model_card

    config = {"model": {"_name_": "hf_causal_lm", "path": "Qwen/Qwen2-0.5B-Instruct"}, "algo": {"_name_": "dpo", "beta": 0.1},
              "data": {"_name_": "jsonl", "path": "prefs.jsonl"}, "run": {"steps": 10, "batch_size": 8}, "seed": 3}  # fmt: skip
    card = model_card(config=config, metrics={}, step=10, title="t", lora=True)
    front = yaml.safe_load(card.split("---")[1])
    assert front == {"library_name": "peft", "tags": ["alignfw", "dpo"], "base_model": "Qwen/Qwen2-0.5B-Instruct"}
    assert "AutoPeftModelForCausalLM" in card and "| reward | none |" in card and "path=prefs.jsonl" in card and "seed 3" in card
