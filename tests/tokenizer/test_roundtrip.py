"""Round trip, special-token safety and long inputs (issue 3, "Round trip", "Special tokens are safe")."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PATTERNS = ["gpt2", "llama3", "qwen2"]


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_decode_inverts_encode(trained, pattern, text):
    tok = trained[pattern]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode()
    assert tok.encode(text.encode()) == ids


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(
        st.one_of(st.sampled_from(["<|endoftext|>", "<|pad|>", "<|endoftext", "|>"]), st.text(max_size=10)),
        max_size=8,
    )
)
def test_special_spellings_are_text_unless_allowed(trained, parts):
    tok = trained["llama3"]
    text = "".join(parts)
    specials = set(tok.special_tokens.values())
    plain = tok.encode(text)
    assert not specials & set(plain)
    assert tok.decode(plain) == text
    allowed = tok.encode(text, allowed_special="all")
    assert tok.decode(allowed) == text
    assert allowed.count(tok.special_token_id("<|endoftext|>")) == text.count("<|endoftext|>")
    only_pad = tok.encode(text, allowed_special={"<|pad|>"})
    assert tok.special_token_id("<|endoftext|>") not in only_pad
    assert only_pad.count(tok.special_token_id("<|pad|>")) == text.count("<|pad|>")
    assert tok.decode(allowed, skip_special_tokens=True) == text.replace("<|endoftext|>", "").replace(
        "<|pad|>", ""
    )


def test_special_token_encodes_alone(trained):
    tok = trained["gpt2"]
    assert tok.encode("<|endoftext|>", allowed_special="all") == [0]
    assert tok.encode("<|endoftext|>") != [0]
    assert len(tok.encode("<|endoftext|>")) > 1


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("gpt2", "x" * 10_000_000),  # one 10 MB pre-tokenized piece
        ("llama3", "中文字" * 3_400_000),  # ~10 MB of CJK letters, one piece
        ("qwen2", "!?" * 5_000_000),  # 10 MB of punctuation, one piece
    ],
    ids=["latin", "cjk", "punct"],
)
def test_10mb_without_whitespace_is_fast(trained, pattern, text):
    tok = trained[pattern]
    start = time.perf_counter()
    ids = tok.encode(text)
    elapsed = time.perf_counter() - start
    assert tok.decode(ids) == text
    # Quadratic merging would take hours; O(n log n) takes seconds even on a slow CI core.
    assert elapsed < 30, f"{elapsed:.1f}s"
