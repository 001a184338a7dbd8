"""Stop tokens and the context window: every EOS id of the model ends a response, and a sequence
longer than the context is cut by the truncation policy (and counted), never an index error."""

from __future__ import annotations

import pytest
import torch

from alignfw.exceptions import ConfigError
from alignfw.plugins.models.hf import HFModelConfig, build_hf_model


@pytest.fixture
def tiny():
    return build_hf_model(HFModelConfig(fast_tokenizer=False))  # GPT-2 positions: a 64-token context


def test_any_eos_id_of_the_generation_config_ends_a_response(tiny):
    torch.manual_seed(0)
    free = tiny.generate(["translate: big cat ="], max_new_tokens=12, temperature=0)
    stop = int(free.response_ids[0, 2])  # the greedy response's third token becomes a second EOS id
    tiny.lm.generation_config.eos_token_id = [tiny.tokenizer.eos_token_id, stop]
    tiny.eos_token_ids = sorted({tiny.tokenizer.eos_token_id, stop})
    gen = tiny.generate(["translate: big cat ="], max_new_tokens=12, temperature=0)
    first = int((gen.response_ids[0] == stop).nonzero()[0])
    assert gen.response_mask[0].tolist() == [1] * (first + 1) + [0] * (gen.response_mask.shape[1] - first - 1)
    assert bool(gen.ended[0])


def test_eos_ids_come_from_the_generation_config_and_the_tokenizer(tiny):
    from alignfw.models.causal_lm import eos_token_ids

    tiny.lm.generation_config.eos_token_id = [7, 9]
    assert eos_token_ids(tiny.lm, tiny.tokenizer) == sorted({7, 9, tiny.tokenizer.eos_token_id})


def test_a_prompt_longer_than_the_context_loses_its_beginning(tiny):
    long = "translate: " + "big cat sees the fish " * 30 + "="  # far over 64 tokens
    gen = tiny.generate([long, "translate: big cat ="], max_new_tokens=8, temperature=0)
    assert gen.sequences.shape[1] <= 64
    assert gen.prompt_len == 64 - 8
    assert tiny.take_stats() == {"data/truncated_prompts": 1.0}
    assert tiny.take_stats() == {}  # counters reset once read
    # the kept part is the end of the prompt
    kept = tiny.tokenizer.decode(gen.sequences[0, : gen.prompt_len])
    assert long.endswith(kept.strip()[-20:])


def test_pairs_fit_the_context_keeping_the_response_start(tiny):
    long_prompt = "translate: " + "big cat " * 40 + "="
    gen = tiny.encode_pairs([long_prompt, "translate: cat ="], [" nyan", " nyan " * 80])
    assert gen.sequences.shape[1] <= 64
    assert tiny.take_stats() == {"data/truncated_prompts": 2.0, "data/truncated_responses": 1.0}
    out = tiny.score(gen)["logprobs"]  # no index error from the position embedding
    assert torch.isfinite(out).all()


def test_no_room_for_a_prompt_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="max_new_tokens=64"):
        tiny.generate(["translate: cat ="], max_new_tokens=64)
    with pytest.raises(ConfigError, match="exceeds the model's context of 64"):
        build_hf_model(HFModelConfig(max_length=100))


def test_ids_past_the_tokenizer_are_never_sampled(tmp_path):
    # an embedding matrix padded past the vocabulary (Qwen2: 151,936 rows for ~151,665 tokens)
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from alignfw.models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny"))
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=4 * len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=64, eos_token_id=tok.eos_token_id))
    lm.lm_head.weight.data[len(tok):] += 5.0  # make the undecodable ids the likeliest
    lm.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = build_hf_model(HFModelConfig(path=str(tmp_path)))
    gen = model.generate(["translate: big cat ="] * 4, max_new_tokens=8, temperature=1.0)
    assert int(gen.response_ids.max()) < len(tok)


def test_a_stop_string_ends_the_response_like_a_stop_token(tiny):
    free = tiny.generate(["translate: big cat ="], max_new_tokens=12, temperature=0)
    text = free.responses[0]
    assert len(text.split()) >= 2, text
    stop = " " + text.split()[1]  # the second word: the response must end right before it
    gen = tiny.generate(["translate: big cat ="], max_new_tokens=12, temperature=0, stop_strings=[stop, "never there"])
    assert gen.responses[0] == text[: text.find(stop)]
    assert bool(gen.ended[0])
    kept = gen.response_ids[0, : int(gen.response_mask[0].sum())].tolist()
    assert tiny.tokenizer.decode(kept).endswith(stop)  # the tokens that write the stop string are trained
    assert stop not in tiny.tokenizer.decode(kept[:-1])  # and not one more
