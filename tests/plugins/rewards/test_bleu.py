"""Tests of the BLEU reward against sacrebleu (the reference implementation) and the BLEU paper."""

from __future__ import annotations

import functools
import math
import time

import pytest
import sacrebleu
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from alignfw.exceptions import ConfigError, DataError, InvalidInputError
from alignfw.plugins.rewards import bleu
from alignfw.plugins.rewards.bleu import (
    BleuConfig,
    BleuReward,
    BleuStats,
    bleu_from_stats,
    corpus_bleu,
    reference_counts,
    segment_stats,
    sentence_bleu,
    tokenize_13a,
)
from alignfw.registry import Register, Registry
from alignfw.types import Record

# A small vocabulary so random sentences share n-grams; punctuation and case exercise 13a and lowercase.
WORDS = ["the", "The", "cat", "dog", "sat", "on", "mat", "a", "big", "red", ",", ".", "3.5", "x-ray", "(", ")", "don't"]
sentences = st.lists(st.sampled_from(WORDS), min_size=0, max_size=14).map(" ".join)
SETTINGS = [
    dict(smooth="exp", tokenize="13a", lowercase=False, effective_order=True),
    dict(smooth="floor", tokenize="13a", lowercase=True, effective_order=True),
    dict(smooth="add-k", tokenize="none", lowercase=False, effective_order=True),
    dict(smooth="none", tokenize="13a", lowercase=False, effective_order=False),
    dict(smooth="exp", tokenize="char", lowercase=False, effective_order=True),
    dict(smooth="floor", tokenize="none", lowercase=False, effective_order=False),
]


@functools.lru_cache(maxsize=None)
def sacre_metric(smooth: str, tokenize: str, lowercase: bool, effective_order: bool, max_order: int) -> sacrebleu.metrics.BLEU:
    return sacrebleu.metrics.BLEU(
        smooth_method=smooth, tokenize=tokenize, lowercase=lowercase, effective_order=effective_order, max_ngram_order=max_order
    )


def sacre_sentence(hyp: str, refs: list[str], smooth: str, tokenize: str, lowercase: bool, effective_order: bool, max_order: int = 4) -> float:
    return sacre_metric(smooth, tokenize, lowercase, effective_order, max_order).sentence_score(hyp, refs).score / 100.0


@settings(max_examples=300, deadline=None)
@given(hyp=sentences, refs=st.lists(sentences, min_size=1, max_size=3), setting=st.sampled_from(SETTINGS))
def test_sentence_bleu_matches_sacrebleu(hyp, refs, setting):
    ours = sentence_bleu(hyp, refs, BleuConfig(**setting))
    assert ours == pytest.approx(sacre_sentence(hyp, refs, **setting), rel=1e-9, abs=1e-12)
    assert 0.0 <= ours <= 1.0


@settings(max_examples=100, deadline=None)
@given(hyp=sentences, refs=st.lists(sentences, min_size=1, max_size=2), max_order=st.integers(1, 6))
def test_max_order_matches_sacrebleu(hyp, refs, max_order):
    setting = dict(smooth="exp", tokenize="13a", lowercase=False, effective_order=True)
    ours = sentence_bleu(hyp, refs, BleuConfig(max_order=max_order, **setting))
    assert ours == pytest.approx(sacre_sentence(hyp, refs, max_order=max_order, **setting), rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    segments=st.lists(st.tuples(sentences, sentences, sentences), min_size=1, max_size=8),
    setting=st.sampled_from(SETTINGS[:4]),
)
def test_corpus_bleu_matches_sacrebleu(segments, setting):
    hyps = [s[0] for s in segments]
    refs_per_hyp = [[s[1], s[2]] for s in segments]
    streams = [[s[1] for s in segments], [s[2] for s in segments]]  # sacrebleu's layout
    expected = sacrebleu.corpus_bleu(
        hyps, streams, smooth_method=setting["smooth"], tokenize=setting["tokenize"],
        lowercase=setting["lowercase"], use_effective_order=setting["effective_order"],
    ).score / 100.0
    assert corpus_bleu(hyps, refs_per_hyp, BleuConfig(**setting)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_corpus_bleu_default_is_sacrebleu_corpus_default():
    hyps = ["the cat sat on the mat", "a dog", "big red dog on a mat ."]
    refs = [["the cat is on the mat"], ["the dog"], ["a big red dog sat on the mat ."]]
    expected = sacrebleu.corpus_bleu(hyps, [[r[0] for r in refs]]).score / 100.0
    assert corpus_bleu(hyps, refs) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab1.,-&;<>'\"()/ \n") + ["&amp;", "&quot;", "<skipped>", "-\n", "é"]), max_size=30).map("".join))
def test_tokenize_13a_matches_sacrebleu(text):
    assert " ".join(tokenize_13a(text.rstrip())) == Tokenizer13a()(text.rstrip())


def test_exact_match_scores_one():
    for text in ["the cat sat on the mat .", "a", "x-ray of 3.5 cats , please"]:
        assert sentence_bleu(text, [text]) == 1.0
        assert sentence_bleu(text, ["something else entirely", text]) == 1.0


def test_empty_response_scores_zero():
    assert sentence_bleu("", ["the cat"]) == 0.0
    assert sentence_bleu("   ", ["the cat"]) == 0.0
    assert sacrebleu.sentence_bleu("", ["the cat"]).score == 0.0


def test_no_overlap_scores_zero_even_with_smoothing():
    for smooth in bleu.SMOOTH_METHODS:
        assert sentence_bleu("dog runs fast", ["the cat sat"], BleuConfig(smooth=smooth)) == 0.0


def test_papineni_modified_unigram_precision():
    # Papineni et al. 2002, section 2.1: "the" x7 against two references is clipped to 2 / 7.
    hyp = ["the"] * 7
    ref_counts, ref_lens = reference_counts([["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]], 4)
    stats = segment_stats(hyp, ref_counts, ref_lens, 4)
    assert stats.correct[0] == 2 and stats.total[0] == 7
    assert stats.correct[1] == 0 and stats.total[1] == 6
    assert stats.ref_len == 7  # closest reference length


def test_clipping_uses_the_best_single_reference_not_the_sum():
    counts, _ = reference_counts([["a", "a", "b"], ["a", "b", "b", "b"]], 1)
    assert counts[("a",)] == 2 and counts[("b",)] == 3


def test_closest_reference_length_ties_go_to_shorter():
    counts, lens = reference_counts([["a"] * 3, ["a"] * 7], 1)
    assert segment_stats(["a"] * 5, counts, lens, 1).ref_len == 3


def test_brevity_penalty():
    stats = BleuStats(correct=[2], total=[2], hyp_len=2, ref_len=4)
    assert bleu_from_stats(stats) == pytest.approx(math.exp(1 - 4 / 2))
    assert bleu_from_stats(BleuStats([2], [2], 4, 2)) == 1.0  # longer than the reference: no penalty


def test_multiple_references_raise_the_score():
    hyp = "the big cat sat on the red mat"
    one = sentence_bleu(hyp, ["the cat sat on the mat"])
    two = sentence_bleu(hyp, ["the cat sat on the mat", "the big cat sat on a red mat"])
    assert two > one


def test_effective_order_gives_short_matches_credit():
    assert sentence_bleu("the cat", ["the cat"], BleuConfig(effective_order=True)) == 1.0
    assert sentence_bleu("the cat", ["the cat"], BleuConfig(effective_order=False, smooth="none")) == 0.0


def test_lowercase_and_tokenize_options():
    assert sentence_bleu("The Cat", ["the cat"], BleuConfig(lowercase=True)) == 1.0
    assert sentence_bleu("The Cat", ["the cat"]) < 1.0
    assert sentence_bleu("cat.", ["cat ."]) == 1.0  # 13a splits the period
    assert sentence_bleu("cat.", ["cat ."], BleuConfig(tokenize="none")) == 0.0
    assert sentence_bleu("abc", ["a b c"], BleuConfig(tokenize="char")) == 1.0


def test_reward_shape_dtype_and_values():
    reward = BleuReward(BleuConfig())
    records = [Record("p1", references=["the cat sat"]), Record("p2", references=["a dog", "the dog"]), Record("p3", references=["x"])]
    out = reward(["p1", "p2", "p3"], ["the cat sat", "the dog", "nothing"], records)
    assert out.shape == (3,) and out.dtype == torch.float32
    assert out.tolist() == pytest.approx([1.0, 1.0, 0.0])


def test_reward_missing_references_names_the_record_and_the_fix():
    reward = BleuReward(BleuConfig())
    records = [Record("ok", references=["a"]), Record("translate: cat =", response="x")]
    with pytest.raises(DataError) as e:
        reward(["ok", "translate: cat ="], ["a", "b"], records)
    msg = str(e.value)
    assert "record 1" in msg and "translate: cat =" in msg
    assert "'references'" in msg and "'reference'" in msg and "data.reference_key" in msg
    with pytest.raises(DataError, match="record 0"):
        reward(["p"], ["a"], [Record("p", references=[])])


def test_reward_length_mismatch():
    with pytest.raises(InvalidInputError, match="2 prompts, 1 responses and 2 records"):
        BleuReward(BleuConfig())(["a", "b"], ["a"], [Record("a", references=["a"])] * 2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (dict(smooth="exponential"), "reward.smooth='exponential'"),
        (dict(tokenize="spm"), "reward.tokenize='spm'"),
        (dict(max_order=0), "reward.max_order=0"),
        (dict(smooth_value=-1.0), "reward.smooth_value=-1.0"),
    ],
)
def test_bad_config_is_a_config_error(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        BleuReward(BleuConfig(**override))


def test_sentence_bleu_rejects_a_bare_string_as_references():
    with pytest.raises(InvalidInputError, match="non-empty list"):
        sentence_bleu("a", "a")  # type: ignore[arg-type]


def test_config_is_a_valid_structured_config():
    cfg = OmegaConf.structured(BleuConfig)
    cfg.max_order = 2
    with pytest.raises(Exception, match="max_ordr"):
        cfg.max_ordr = 3
    with pytest.raises(Exception):
        cfg.max_order = "four"
    assert OmegaConf.to_object(cfg) == BleuConfig(max_order=2)


def test_hook_registers_bleu():
    registry = Registry()
    bleu.register_rewards(Register(registry, "reward", "bleu", "test"))
    reg = registry.get("reward", "bleu")
    assert reg.factory is BleuReward and reg.config is BleuConfig
    assert isinstance(reg.build(BleuConfig()), BleuReward)


def test_fast_enough_for_online_training():
    reward = BleuReward(BleuConfig())
    n = 3000
    records = [Record(f"p{i}", references=[f"mago nyan miru el sakan {i % 7}"]) for i in range(n)]
    responses = [f"mago vauv miru un sakan {i % 5}" for i in range(n)]
    start = time.perf_counter()
    out = reward([r.prompt for r in records], responses, records)
    elapsed = time.perf_counter() - start
    assert out.shape == (n,)
    assert elapsed < 1.5, f"{n} sentences took {elapsed:.2f}s"
