"""Sample completions at every evaluation: the ``on_samples`` hook, samples.jsonl, TensorBoard text,
the report's start / final table, and the guarantee that sampling leaves training unchanged."""

from __future__ import annotations

import json

import pytest

from alignfw.hookspecs import hookimpl

RUN = {"run.steps": 4, "run.batch_size": 4, "run.eval_size": 6, "run.eval_every": 2, "run.samples": 3, "rollout.max_new_tokens": 6, "run.progress": False}


def short(prompts, completions, **columns):
    return [-len(c.split()) / 4 for c in completions]


class Collect:
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[dict]]] = []

    @hookimpl
    def on_samples(self, step, samples):
        self.calls.append((step, samples))


def _train(tmp_path, **overrides):
    import alignfw

    return alignfw.train("grpo", reward=["bleu", short], reward_weights=[1.0, 0.5], overrides={**RUN, **overrides}, output_dir=tmp_path)


def test_hook_on_samples(builtin_plugins, tmp_path):
    from alignfw.registry import get_plugin_manager, set_plugin_manager

    collect = Collect()
    pm = get_plugin_manager()
    pm.register(collect)
    set_plugin_manager(pm)
    try:
        _train(tmp_path)
    finally:
        pm.unregister(collect)
    assert [step for step, _ in collect.calls] == [0, 2, 4]  # start, every run.eval_every, end
    for _, samples in collect.calls:
        assert len(samples) == 3
        for s in samples:
            assert set(s) == {"prompt", "response", "length", "reward", "rewards"} and set(s["rewards"]) == {"bleu", "short"}
            assert s["reward"] == pytest.approx(s["rewards"]["bleu"] + 0.5 * s["rewards"]["short"], abs=1e-5)
            assert s["rewards"]["short"] == pytest.approx(-len(s["response"].split()) / 4)
            assert s["prompt"].startswith("translate:") and isinstance(s["length"], int) and s["length"] <= RUN["rollout.max_new_tokens"]
    assert [s["prompt"] for s in collect.calls[0][1]] == [s["prompt"] for s in collect.calls[-1][1]]  # the same prompts each time
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]  # the built-in logger's file
    assert [(r["step"], r["response"]) for r in rows] == [(step, s["response"]) for step, ss in collect.calls for s in ss]


def test_sampling_leaves_training_unchanged(builtin_plugins, tmp_path):
    def metrics(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]

    _train(tmp_path / "with", **{"run.samples": 3})
    _train(tmp_path / "without", **{"run.samples": 0})
    assert metrics(tmp_path / "with") == metrics(tmp_path / "without")
    assert not (tmp_path / "without" / "samples.jsonl").exists()


def test_samples_reach_tensorboard_and_the_report(builtin_plugins, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    texts = acc.Tensors("samples/text_summary")
    assert [t.step for t in texts] == [0, 2, 4]
    table = texts[0].tensor_proto.string_val[0].decode()
    assert table.startswith("| prompt | response | reward | bleu | short | length |") and "translate:" in table
    page = (tmp_path / "report.html").read_text()
    section = page.split("<h2>Sample completions</h2>")[1].split("</table>")[0]
    assert "<th>step 0</th><th>step 4</th>" in section  # start and final side by side
    first = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[0])
    assert section.count("<tr>") == 1 + 3 and first["prompt"].split("=")[0] in section and "bleu " in section and "tokens" in section


def test_report_keeps_the_last_of_a_repeated_step(tmp_path):
    from alignfw.report import load_samples

    rows = [{"step": 0, "prompt": "p", "response": "a"}, {"step": 2, "prompt": "p", "response": "b"}, {"step": 2, "prompt": "p", "response": "c"}]
    rows.insert(2, {"step": 4, "prompt": "p", "response": "x"})  # step 2 logged again after step 4: a resumed run
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_samples(tmp_path / "samples.jsonl")
    assert {k: [s["response"] for s in v] for k, v in got.items()} == {0: ["a"], 2: ["c"], 4: ["x"]}
