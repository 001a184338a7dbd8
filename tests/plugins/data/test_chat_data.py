"""Conversational rows (TRL's conversational format) in every file format and every record kind,
rendered with a chat template; bad conversational rows named by file and line; and the pipeline
training on conversational data with ``model.chat_template`` for a model without a template."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from chat_models import QWEN2_TEMPLATE, hf_tokenizer

from alignfw.exceptions import ConfigError, DataError
from alignfw.models.chat import render_records
from alignfw.plugins.data.sources import FileSource, FileSourceConfig
from alignfw.types import ChatText, UnrenderedChat


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


SYS = {"role": "system", "content": "Answer briefly."}
Q = [SYS, U("What color is the sky?")]

#: kind -> (rows, prompt messages, {field: answer messages (or a list of them for responses)})
KIND_ROWS = {
    "prompt": ([{"prompt": Q, "topic": "sky"}], Q, {}),
    "sft": ([{"prompt": Q, "completion": [A("Blue.")]}], Q, {"response": [A("Blue.")]}),
    "sft_messages": ([{"messages": Q + [A("Blue.")]}], Q, {"response": [A("Blue.")]}),
    "preference": ([{"prompt": Q, "chosen": [A("Blue.")], "rejected": [A("Green.")]}], Q, {"chosen": [A("Blue.")], "rejected": [A("Green.")]}),
    "preference_implicit": (
        [{"chosen": Q + [A("Blue.")], "rejected": Q + [A("Green.")]}], Q, {"chosen": [A("Blue.")], "rejected": [A("Green.")]},
    ),
    "ranked": ([{"prompt": Q, "responses": [[A("Blue.")], [A("Grey.")], [A("Green.")]]}], Q, {"responses": [[A("Blue.")], [A("Grey.")], [A("Green.")]]}),
    "feedback": ([{"prompt": Q, "completion": [A("Green.")], "feedback": -1}], Q, {"response": [A("Green.")]}),
    "score": ([{"messages": Q + [A("Blue.")], "score": 0.75}], Q, {"response": [A("Blue.")]}),
}
EXPECTED_KIND = {"sft_messages": "sft", "preference_implicit": "preference"}


def write(fmt: str, tmp_path: Path, rows: list[dict]) -> Path:
    if fmt == "jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":  # message lists as JSON-encoded cells
        path = tmp_path / "data.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(list(rows[0]))
            for r in rows:
                w.writerow([json.dumps(v) if isinstance(v, list) else v for v in r.values()])
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        path = tmp_path / "ds"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def qwen():
    return hf_tokenizer("qwen2")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "hf_disk"])
@pytest.mark.parametrize("case", list(KIND_ROWS))
def test_every_kind_in_every_format_renders_like_trl(case, fmt, tmp_path, qwen):
    rows, prompt, answers = KIND_ROWS[case]
    [rec] = FileSource(FileSourceConfig(path=str(write(fmt, tmp_path, rows)))).records("train")
    assert rec.kind == EXPECTED_KIND.get(case, case.split("_")[0])
    assert rec.conversation is not None and rec.conversation.prompt == prompt
    assert isinstance(rec.prompt, UnrenderedChat)
    if case == "feedback":
        assert rec.feedback == -1
    if case == "score":
        assert rec.score == 0.75
    if case == "prompt":
        assert rec.meta == {"topic": "sky"}
    [done] = render_records([rec], qwen)
    p = qwen.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    assert isinstance(done.prompt, ChatText) and done.prompt == p
    for field, msgs in answers.items():
        assert getattr(rec.conversation, field) == msgs
        if field == "responses":
            for got, m in zip(done.responses, msgs):
                assert got == qwen.apply_chat_template(prompt + m, tokenize=False)[len(p) :]
        else:
            assert getattr(done, field) == qwen.apply_chat_template(prompt + msgs, tokenize=False)[len(p) :]
            assert isinstance(getattr(done, field), ChatText)


def test_string_answers_to_a_conversational_prompt_are_assistant_messages(tmp_path):
    path = write("jsonl", tmp_path, [{"prompt": Q, "chosen": "Blue.", "rejected": "Green."}])
    [rec] = FileSource(FileSourceConfig(path=str(path))).records("train")
    assert rec.conversation.chosen == [A("Blue.")] and rec.conversation.rejected == [A("Green.")]


def test_plain_rows_are_unchanged(tmp_path):
    path = write("jsonl", tmp_path, [{"prompt": "p", "completion": "c"}])
    [rec] = FileSource(FileSourceConfig(path=str(path))).records("train")
    assert rec.conversation is None and rec.prompt == "p" and rec.response == "c" and type(rec.prompt) is str


@pytest.mark.parametrize(
    "rows, fmt, match",
    [
        ([{"prompt": [U("a")]}, {"prompt": [{"role": "human", "content": "b"}]}], "jsonl", r"line 2 of data\.jsonl: .*unknown role 'human'; use role 'user'"),
        ([{"prompt": [U("a")]}, {"prompt": [U("b")]}, {"prompt": [{"role": "gpt", "content": "c"}]}], "csv", r"line 4 of data\.csv: .*unknown role 'gpt'; use role 'assistant'"),
        ([{"prompt": [U("a")]}, {"prompt": [{"role": "robot", "content": "b"}]}], "parquet", r"row 2 of data\.parquet: .*unknown role 'robot'; use one of"),
        ([{"messages": [U("a"), A("b")]}, {"messages": [U("a")]}], "jsonl", r"line 2 of data\.jsonl: the conversation in column 'messages' must end with the assistant's answer"),
        ([{"prompt": "plain", "chosen": [A("b")], "rejected": [A("c")]}], "jsonl", r"line 1 of data\.jsonl: column 'chosen' is a list of messages but 'prompt' is plain text"),
        ([{"chosen": [U("a"), A("b")], "rejected": [U("x"), A("c")]}], "jsonl", r"line 1 of data\.jsonl: no prompt column, and the conversations .* share no first message"),
    ],
)
def test_bad_conversational_rows_are_named(rows, fmt, match, tmp_path):
    with pytest.raises(DataError, match=match):
        FileSource(FileSourceConfig(path=str(write(fmt, tmp_path, rows)))).records("train")


# -- the model option and the pipeline ----------------------------------------------------------


def test_chat_template_option_gives_a_template_to_a_model_without_one(tmp_path):
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model

    (tmp_path / "t.jinja").write_text(QWEN2_TEMPLATE)
    model = build_hf_model(HFModelConfig(chat_template=str(tmp_path / "t.jinja")))
    assert model.tokenizer.chat_template == QWEN2_TEMPLATE
    assert build_hf_model(HFModelConfig(chat_template=QWEN2_TEMPLATE)).tokenizer.chat_template == QWEN2_TEMPLATE
    with pytest.raises(ConfigError, match=r"model\.chat_template='missing\.jinja' is not a file"):
        build_hf_model(HFModelConfig(chat_template="missing.jinja"))
    with pytest.raises(ConfigError, match=r"model\.chat_template: the chat template in .* does not parse"):
        build_hf_model(HFModelConfig(chat_template="{% for m in messages %}{{ m['content'] }}"))


#: a short ChatML-style template over the tiny model's one special token (its context is 64 tokens)
TINY_TEMPLATE = (
    "{%- for m in messages %}{{- '<|endoftext|>' + m['role'][0] + ':' + m['content'] + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|endoftext|>a:' }}{%- endif %}"
)


def _trainer(reg, tmp_path: Path, algo: str, data_path: Path, *, template: Path | None, reward: str | None = None, **algo_opts):
    from alignfw._hydra import named_config
    from alignfw.config import AlignfwConfig
    from alignfw.pipeline import Trainer

    cfg = AlignfwConfig(seed=0, device="cpu")
    model = named_config(reg.get("model", "hf_causal_lm").config, "hf_causal_lm")()
    model.chat_template = str(template) if template else None
    cfg.model = model
    cfg.data = named_config(reg.get("data", "file").config, "file")(path=str(data_path))
    if reward is not None:
        cfg.reward = named_config(reg.get("reward", reward).config, reward)()
    cfg.algo = named_config(reg.get("algorithm", algo).config, algo)(**algo_opts)
    cfg.run.progress = False
    cfg.run.steps = 2
    cfg.run.batch_size = 2
    cfg.run.eval_every = 0
    cfg.run.save_every = 0
    cfg.rollout.max_new_tokens = 4
    return Trainer(cfg, tmp_path / "run")


def test_pipeline_trains_on_conversational_data(builtin_plugins, tmp_path):
    reg = builtin_plugins
    (tmp_path / "t.jinja").write_text(TINY_TEMPLATE)
    sft = write("jsonl", tmp_path, [{"messages": [U(f"translate: cat {i} ="), A("nyan")]} for i in range(4)])
    tr = _trainer(reg, tmp_path, "sft", sft, template=tmp_path / "t.jinja")
    assert all(isinstance(r.prompt, ChatText) and r.conversation is not None for r in tr.train_records)
    summary = tr.train()
    assert summary["steps"] == 2
    pref = tmp_path / "pref"
    pref.mkdir()
    dpo_data = write("jsonl", pref, [{"prompt": [U(f"q{i}")], "chosen": [A("yes")], "rejected": [A("no")]} for i in range(4)])
    assert _trainer(reg, pref, "dpo", dpo_data, template=tmp_path / "t.jinja").train()["steps"] == 2


def test_pipeline_without_a_template_names_the_option(builtin_plugins, tmp_path):
    data = write("jsonl", tmp_path, [{"prompt": [U("hi")]}])
    with pytest.raises(ConfigError, match=r"line 1 of data\.jsonl is a conversation .*set model\.chat_template="):
        _trainer(builtin_plugins, tmp_path, "sft", data, template=None)


def test_rollout_renders_prompts_and_the_reward_gets_the_conversation(tmp_path):
    from alignfw.config import RolloutConfig
    from alignfw.plugins.models.hf import HFModelConfig, build_hf_model
    from alignfw.rollout import rollout

    (tmp_path / "t.jinja").write_text(TINY_TEMPLATE)
    model = build_hf_model(HFModelConfig(chat_template=str(tmp_path / "t.jinja")))
    [rec] = FileSource(FileSourceConfig(path=str(write("jsonl", tmp_path, [{"prompt": Q}])))).records("train")
    seen = {}

    def reward(prompts, responses, records):
        seen.update(prompts=prompts, responses=responses, records=records)
        return [1.0] * len(prompts)

    ro = rollout(model, reward, [rec], RolloutConfig(max_new_tokens=3), group_size=2)
    want = model.tokenizer.apply_chat_template(Q, tokenize=False, add_generation_prompt=True)
    assert seen["prompts"] == [want, want] and all(isinstance(p, ChatText) for p in seen["prompts"])
    assert [r.conversation.prompt for r in seen["records"]] == [Q, Q]
    assert all(isinstance(r, str) for r in seen["responses"])
    ids, _ = model.encode_prompts([seen["prompts"][0]])
    assert ids[0].tolist() == list(model.tokenizer(want)["input_ids"])  # the template's specials are specials
    assert ro.gen.sequences.shape[0] == 2
