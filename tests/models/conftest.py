"""Fixtures of the model tests: a tiny random Llama (a real architecture) with the built-in tokenizer."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    """A directory with a 2-layer random LlamaForCausalLM and the built-in model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from alignfw.models import resolve_model_path

    d = tmp_path_factory.mktemp("llama")
    tok = AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny"))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)
