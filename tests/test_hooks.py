"""Every hook is documented and tested (datasette's meta-tests), and each hook does its job."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from alignfw import hookspecs
from alignfw.hookspecs import hookimpl
from alignfw.types import Record

REPO = Path(__file__).resolve().parents[1]
HOOKS = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "alignfw_spec"))


def test_there_are_nine_hooks():
    assert HOOKS == sorted(
        ["register_models", "register_rewards", "register_algorithms", "register_data_sources", "register_engines",
         "on_run_start", "on_step_end", "on_samples", "on_checkpoint", "on_run_end"]
    )  # fmt: skip


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    doc = (REPO / "docs" / "plugins.md").read_text()
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"### {hook}({params})" in doc, f"docs/plugins.md lacks a '### {hook}({params})' section"
    assert getattr(hookspecs, hook).__doc__ and "Example::" in getattr(hookspecs, hook).__doc__


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    src = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    assert re.search(rf"def test_hook_{hook}\b", src), f"no test_hook_{hook}"


# -- registration hooks ------------------------------------------------------------------------


@dataclass
class ConstCfg:
    value: float = 0.5


class ThrowawayPlugin:
    """Registers one component of each kind plus records lifecycle calls."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []

    @hookimpl
    def register_rewards(self, register):
        register("const", lambda cfg: (lambda p, r, recs: [cfg.value] * len(p)), config=ConstCfg)

    @hookimpl
    def register_data_sources(self, register):
        class Src:
            def __init__(self, cfg):
                pass

            def records(self, split):
                return [Record(prompt=f"translate: cat {i % 3} =", references=["nyan"]) for i in range(8)]

        register("eight", Src, config=ConstCfg)

    @hookimpl
    def register_models(self, register):
        from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

        register("tiny_again", build_hf_model, config=HFModelConfig)

    @hookimpl
    def register_algorithms(self, register):
        class Count:
            def __init__(self, cfg, ctx):
                self.n = 0
                self.ctx = ctx

            def step(self, records):
                self.n += 1
                return {"n": float(self.n), "batch": float(len(records))}

            def state_dict(self):
                return {"n": self.n}

            def load_state_dict(self, s):
                self.n = s["n"]

        register("count", Count, config=ConstCfg)

    @hookimpl
    def register_engines(self, register):
        calls = self.calls

        class Echo:  # answers every prompt with cfg.value copies of "!" (docs/plugins.md's example)
            def __init__(self, cfg, ctx):
                self.cfg, self.model = cfg, ctx.model
                calls.append(("engine", "build"))

            def generate(self, prompts, *, max_new_tokens, seeds=None, **sampling):
                calls.append(("engine", "generate"))
                return self.model.encode_pairs(prompts, ["!" * int(self.cfg.value)] * len(prompts))

            def sync_weights(self, model):
                calls.append(("engine", "sync"))

            def sleep(self):
                calls.append(("engine", "sleep"))

            def wake(self):
                calls.append(("engine", "wake"))

        register("echo", Echo, config=ConstCfg)

    @hookimpl
    def on_run_start(self, run_dir, config):
        self.calls.append(("start", config["seed"]))

    @hookimpl
    def on_step_end(self, step, metrics):
        self.calls.append(("step", step))

    @hookimpl
    def on_checkpoint(self, step, path):
        self.calls.append(("ckpt", (step, Path(path).name)))

    @hookimpl
    def on_run_end(self, run_dir, metrics):
        self.calls.append(("end", run_dir))


@pytest.fixture
def throwaway(use_plugins):
    import alignfw.plugins.loggers as loggers

    plugin = ThrowawayPlugin()
    reg = use_plugins(plugin, loggers)
    return plugin, reg


def _run(reg, tmp_path, steps=3, save_every=2):
    from alignfw._hydra import named_config
    from alignfw.config import AlignfwConfig
    from alignfw.pipeline import run

    cfg = AlignfwConfig(seed=7)
    cfg.model = named_config(reg.get("model", "tiny_again").config, "tiny_again")()
    cfg.data = named_config(ConstCfg, "eight")()
    cfg.algo = named_config(ConstCfg, "count")()
    cfg.run.steps, cfg.run.batch_size, cfg.run.save_every, cfg.run.progress = steps, 4, save_every, False
    return run(cfg, tmp_path / "run", {"seed": 7})


def test_hook_register_rewards(throwaway):
    _, reg = throwaway
    fn = reg.get("reward", "const").build(ConstCfg(value=2.0))
    assert fn(["a", "b"], ["x", "y"], []) == [2.0, 2.0]
    assert reg.get("reward", "const").plugin.startswith("ThrowawayPlugin") or reg.get("reward", "const").plugin


def test_hook_register_data_sources(throwaway):
    _, reg = throwaway
    src = reg.get("data", "eight").build(ConstCfg())
    assert len(src.records("train")) == 8 and src.records("train")[0].kind == "reference"


def test_hook_register_models(throwaway):
    _, reg = throwaway
    from alignfw.plugins.models.hf import HFModelConfig

    model = reg.get("model", "tiny_again").build(HFModelConfig())
    ids, mask = model.encode_prompts(["translate: cat ="])
    assert ids.shape == mask.shape and ids.shape[0] == 1


def test_hook_register_algorithms(throwaway, tmp_path):
    _, reg = throwaway
    summary = _run(reg, tmp_path, steps=3, save_every=0)
    assert summary["steps"] == 3
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["n"] for r in rows] == [1.0, 2.0, 3.0] and all(r["batch"] == 4.0 for r in rows)


def test_hook_register_engines(throwaway):
    plugin, reg = throwaway
    from alignfw.config import RolloutConfig
    from alignfw.plugins.models.hf import HFModelConfig
    from alignfw.rollout import rollout

    model = reg.get("model", "tiny_again").build(HFModelConfig())
    cfg = RolloutConfig(engine=ConstCfg(value=3.0))  # an engine's config instance selects it, as rollout.engine=echo does
    recs = [Record(prompt="translate: cat =")] * 2
    for _ in range(2):
        ro = rollout(model, lambda p, r, recs: [float(len(x)) for x in r], recs, cfg)
    assert ro.responses == ["!!!", "!!!"] and ro.scores.tolist() == [3.0, 3.0]
    engine_calls = [c[1] for c in plugin.calls if c[0] == "engine"]
    assert engine_calls == ["build"] + ["wake", "sync", "generate", "sleep"] * 2  # built once, synced before each rollout


def test_hook_on_run_start(throwaway, tmp_path):
    plugin, reg = throwaway
    _run(reg, tmp_path)
    assert plugin.calls[0] == ("start", 7)


def test_hook_on_step_end(throwaway, tmp_path):
    plugin, reg = throwaway
    _run(reg, tmp_path)
    assert [c[1] for c in plugin.calls if c[0] == "step"] == [1, 2, 3]


def test_hook_on_checkpoint(throwaway, tmp_path):
    plugin, reg = throwaway
    _run(reg, tmp_path, steps=3, save_every=2)
    # every 2 steps, and once more at the end for the last step
    assert [c[1] for c in plugin.calls if c[0] == "ckpt"] == [(2, "step_00000002"), (3, "step_00000003")]


def test_hook_on_run_end(throwaway, tmp_path):
    plugin, reg = throwaway
    _run(reg, tmp_path)
    assert plugin.calls[-1] == ("end", str(tmp_path / "run"))
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
