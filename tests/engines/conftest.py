"""Fixtures of the engine tests: tiny random Qwen2 and Llama policies with head dimension 64 (the
smallest that vLLM's CPU attention accepts; the built-in tiny GPT-2's 16 is rejected), the built-in
model's tokenizer, fp32 on CPU."""

from __future__ import annotations

import pytest
import torch


def build_tiny(kind: str, path, *, head_dim: int = 64, seed: int = 0) -> str:
    """A 2-layer random ``kind`` ("qwen2" or "llama") causal LM with ``head_dim``, saved to ``path``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from alignfw.models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny"))
    config_cls, model_cls = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}[kind]
    torch.manual_seed(seed)
    cfg = config_cls(
        vocab_size=len(tok), hidden_size=2 * head_dim, intermediate_size=4 * head_dim, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=kind == "qwen2", initializer_range=0.2, torch_dtype="float32",
    )  # fmt: skip  # initializer_range: peakier than the default 0.02, so greedy decoding has clear winners
    model = model_cls(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> str:
    return build_tiny("qwen2", tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="session")
def tiny_llama64(tmp_path_factory) -> str:
    return build_tiny("llama", tmp_path_factory.mktemp("llama64"))


@pytest.fixture(scope="session")
def same_generation():
    """Asserts that two Generations are the same samples: tokens, masks, texts and ``ended``."""

    def check(a, b) -> None:
        assert torch.equal(a.sequences, b.sequences)
        assert torch.equal(a.attention_mask, b.attention_mask)
        assert torch.equal(a.response_mask, b.response_mask)
        assert a.prompt_len == b.prompt_len and a.responses == b.responses
        assert torch.equal(a.ended, b.ended)

    return check
