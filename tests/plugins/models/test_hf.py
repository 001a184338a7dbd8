"""The Hugging Face model plugin: local loading through safetensors only, clear errors, fused attention option."""

from __future__ import annotations

import shutil

import pytest
import torch

from alignfw.exceptions import ConfigError
from alignfw.models import resolve_model_path
from alignfw.plugins.models.hf import HFModelConfig, build_hf_model


def test_builtin_tiny_loads_and_generates():
    model = build_hf_model(HFModelConfig())
    gen = model.generate(["translate: big cat ="], max_new_tokens=6, temperature=0)
    assert gen.sequences.shape[0] == 1 and gen.response_mask.sum() > 0
    assert model.lm.config.model_type == "gpt2"


def test_fused_attention_option_matches_eager():
    torch.manual_seed(0)
    fused = build_hf_model(HFModelConfig(attn_implementation="alignfw"))
    eager = build_hf_model(HFModelConfig(attn_implementation="eager"))
    ids, mask = fused.encode_prompts(["translate: big cat =", "translate: a red fish runs ="])
    with torch.no_grad():
        a = fused.lm(input_ids=ids, attention_mask=mask).logits
        b = eager.lm(input_ids=ids, attention_mask=mask).logits
    m = mask.bool()
    torch.testing.assert_close(a[m], b[m], rtol=1e-4, atol=1e-4)


def test_unknown_builtin_lists_builtins():
    with pytest.raises(ConfigError, match="built-in models: builtin:tiny"):
        resolve_model_path("builtin:huge")


def test_directory_without_config_is_named(tmp_path):
    with pytest.raises(ConfigError, match="without config.json"):
        resolve_model_path(str(tmp_path))


def test_bad_dtype_is_named():
    with pytest.raises(ConfigError, match="not a dtype"):
        build_hf_model(HFModelConfig(dtype="float33"))


def test_pickled_weights_are_refused(tmp_path):
    """A directory with only pytorch_model.bin (pickle) must not be loaded."""
    src = resolve_model_path("builtin:tiny")
    shutil.copytree(src, tmp_path / "m")
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(lm.state_dict(), tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="could not load"):
        build_hf_model(HFModelConfig(path=str(tmp_path / "m")))


def test_builtin_tiny_uses_the_rust_tokenizer_with_identical_ids():
    from alignfw.tokenizer import Tokenizer

    fast = build_hf_model(HFModelConfig())
    slow = build_hf_model(HFModelConfig(fast_tokenizer=False))
    assert isinstance(fast.fast_tokenizer, Tokenizer) and slow.fast_tokenizer is None
    prompts = ["translate: big cat =", "translate: a red fish runs =", "translate: <|endoftext|> ="]
    a_ids, a_mask = fast.encode_prompts(prompts[:2])
    b_ids, b_mask = slow.encode_prompts(prompts[:2])
    assert torch.equal(a_ids, b_ids) and torch.equal(a_mask, b_mask)
    ga = fast.encode_pairs(prompts[:2], [" mago nyan", " un roka sakan koru"])
    gb = slow.encode_pairs(prompts[:2], [" mago nyan", " un roka sakan koru"])
    assert torch.equal(ga.sequences, gb.sequences) and torch.equal(ga.response_mask, gb.response_mask)
    torch.manual_seed(1)
    ra = fast.generate(prompts[:2], max_new_tokens=10, temperature=1.0).responses
    torch.manual_seed(1)
    rb = slow.generate(prompts[:2], max_new_tokens=10, temperature=1.0).responses
    assert ra == rb
    # a special token's spelling inside user text stays plain text with the Rust tokenizer
    eos = fast.tokenizer.eos_token_id
    assert eos not in fast.encode_texts([prompts[2]])[0]


def test_a_file_alignfw_cannot_load_falls_back_to_hugging_face(tmp_path):
    from alignfw.models import native_tokenizer

    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordPiece", "vocab": {}}}')
    assert native_tokenizer(str(tmp_path)) is None
    assert native_tokenizer(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral", "llama2"])
def test_every_family_gets_the_rust_tokenizer(family, tmp_path):
    from chat_models import save_model

    model = build_hf_model(HFModelConfig(path=str(save_model(family, tmp_path / family))))
    assert model.fast_tokenizer is not None
    assert model.fast_tokenizer.family == ("ByteLevelBPE" if family in ("llama3", "qwen2") else "BPE")


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_a_tokenizer_that_differs_from_hugging_face_is_not_used(family, monkeypatch, caplog):
    import json

    from chat_models import hf_tokenizer

    from alignfw.models import loading, native_tokenizer
    from alignfw.tokenizer import Tokenizer

    hf = hf_tokenizer(family)
    hf.name_or_path = f"tiny-{family}"
    assert native_tokenizer(hf) is not None
    real = Tokenizer.from_str.__func__

    first_token = hf.backend_tokenizer.encode(loading.PARITY_PROBES[0], add_special_tokens=False).tokens[0]

    def swapped(cls, text):  # the same file with the ids of two tokens swapped
        data = json.loads(text)
        vocab = data["model"]["vocab"]
        last = max(vocab, key=vocab.get)
        vocab[first_token], vocab[last] = vocab[last], vocab[first_token]
        return real(cls, json.dumps(data))

    monkeypatch.setattr(Tokenizer, "from_str", classmethod(swapped))
    with caplog.at_level("WARNING", logger=loading.__name__):
        assert native_tokenizer(hf) is None
    [record] = caplog.records
    message = record.getMessage()
    assert f"tiny-{family}" in message and "Hugging Face's tokenizer is used" in message
    assert f"on {loading.PARITY_PROBES[0]!r} (special tokens recognised, add_special_tokens=False)" in message


def test_a_normalized_special_token_keeps_chats_on_hugging_face(tmp_path, caplog):
    # A special token matched after normalization (normalized=true) is not covered by literal spans,
    # so a chat's user-typed spelling would become the token: the parity check refuses the file.
    import json

    from chat_models import hf_tokenizer

    from alignfw.models import loading, native_tokenizer

    data = json.loads(hf_tokenizer("qwen2").backend_tokenizer.to_str())
    for t in data["added_tokens"]:
        t["normalized"] = t["content"] == "<|im_start|>"
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger=loading.__name__):
        assert native_tokenizer(str(tmp_path)) is None
    [record] = caplog.records
    assert str(tmp_path) in record.getMessage() and "(special tokens as literal spans" in record.getMessage()
