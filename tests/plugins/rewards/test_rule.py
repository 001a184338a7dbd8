"""Tests of the rule-based reward: each rule kind, weighting, and construction-time validation."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from alignfw.exceptions import ConfigError, InvalidInputError
from alignfw.plugins.rewards import rule
from alignfw.plugins.rewards.rule import RuleConfig, RuleReward, RuleSpec, compile_rule, length_score
from alignfw.registry import Register, Registry
from alignfw.types import Record


def score(spec: RuleSpec, text: str) -> float:
    return compile_rule(spec)(text)


def reward_of(*specs: RuleSpec, normalize: bool = True) -> RuleReward:
    return RuleReward(RuleConfig(rules=list(specs), normalize=normalize))


# ---- regex ----------------------------------------------------------------------------------


def test_regex_match_and_no_match():
    must = RuleSpec(kind="regex", pattern=r"^Answer: \d+$")
    assert score(must, "Answer: 42") == 1.0
    assert score(must, "answer: 42") == 1.0  # case-insensitive by default
    assert score(must, "The answer is 42") == 0.0
    assert score(RuleSpec(kind="regex", pattern="^Answer", case_sensitive=True), "answer") == 0.0
    no_urls = RuleSpec(kind="regex", pattern=r"https?://", match=False)
    assert score(no_urls, "see http://x.y") == 0.0
    assert score(no_urls, "no links here") == 1.0


def test_bad_regex_fails_at_construction_naming_the_rule():
    rules = [RuleSpec(kind="length", min=1), RuleSpec(kind="regex", name="no_refs", pattern="(unclosed")]
    with pytest.raises(ConfigError) as e:
        RuleReward(RuleConfig(rules=rules))
    msg = str(e.value)
    assert "reward.rules[1]" in msg and "'no_refs'" in msg and "invalid regular expression '(unclosed'" in msg
    assert "missing )" in msg


def test_regex_needs_a_pattern():
    with pytest.raises(ConfigError, match=r"reward.rules\[0\] \('regex\[0\]', kind 'regex'\): needs a pattern"):
        reward_of(RuleSpec(kind="regex"))


# ---- keywords -------------------------------------------------------------------------------


def test_required_keywords_partial_and_all_or_nothing():
    spec = RuleSpec(kind="keywords", keywords=["Paris", "France"])
    assert score(spec, "Paris is in France") == 1.0
    assert score(spec, "paris!") == 0.5
    assert score(spec, "Berlin") == 0.0
    strict = RuleSpec(kind="keywords", keywords=["Paris", "France"], partial=False)
    assert score(strict, "paris!") == 0.0
    assert score(strict, "PARIS, FRANCE") == 1.0


def test_forbidden_keywords_case_and_whole_words():
    spec = RuleSpec(kind="keywords", keywords=["sorry", "as an AI"], mode="forbidden")
    assert score(spec, "Here is the answer.") == 1.0
    assert score(spec, "Sorry, as an ai I cannot") == 0.0
    assert score(spec, "sorry about that") == 0.5
    cased = RuleSpec(kind="keywords", keywords=["Sorry"], mode="forbidden", case_sensitive=True)
    assert score(cased, "sorry") == 1.0
    whole = RuleSpec(kind="keywords", keywords=["cat"], whole_word=True)
    assert score(whole, "a category") == 0.0
    assert score(whole, "the cat.") == 1.0
    assert score(RuleSpec(kind="keywords", keywords=["cat"]), "a category") == 1.0


def test_keywords_validation():
    with pytest.raises(ConfigError, match="non-empty list of non-empty keywords"):
        reward_of(RuleSpec(kind="keywords"))
    with pytest.raises(ConfigError, match=r"reward\.rules\[0\]\.mode='banned' is not a valid choice: must be one of 'required', 'forbidden'"):
        reward_of(RuleSpec(kind="keywords", keywords=["x"], mode="banned"))


# ---- length ---------------------------------------------------------------------------------


def test_length_linear_penalty_in_words_and_chars():
    spec = RuleSpec(kind="length", min=3, max=5, tolerance=4)
    assert score(spec, "one two three") == 1.0
    assert score(spec, "one two three four five") == 1.0
    assert score(spec, "one two") == pytest.approx(0.75)
    assert score(spec, " ".join(["w"] * 7)) == pytest.approx(0.5)
    assert score(spec, "") == pytest.approx(0.25)
    assert score(spec, " ".join(["w"] * 20)) == 0.0
    chars = RuleSpec(kind="length", unit="chars", max=4, tolerance=2)
    assert score(chars, "abcd") == 1.0
    assert score(chars, "abcde") == pytest.approx(0.5)
    assert score(RuleSpec(kind="length", min=2), "a " * 100) == 1.0  # no upper bound


@settings(max_examples=200, deadline=None)
@given(length=st.integers(0, 200), lo=st.integers(0, 50), width=st.integers(0, 50), tol=st.floats(0.5, 30))
def test_length_score_properties(length, lo, width, tol):
    hi = lo + width
    s = length_score(length, lo, hi, tol)
    assert 0.0 <= s <= 1.0
    assert (s == 1.0) == (lo <= length <= hi)
    if length > hi:  # monotone: one more unit away never scores higher
        assert length_score(length + 1, lo, hi, tol) <= s


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (RuleSpec(kind="length"), "needs min, max or both"),
        (RuleSpec(kind="length", min=5, max=2), "min=5 is larger than max=2"),
        (RuleSpec(kind="length", min=-1), "reward.rules[0].min=-1 is out of range: must be >= 0"),
        (RuleSpec(kind="length", max=3, tolerance=0), "reward.rules[0].tolerance=0 is out of range: must be > 0"),
        (RuleSpec(kind="length", max=3, unit="tokens"), "reward.rules[0].unit='tokens' is not a valid choice: must be one of 'words', 'chars'"),
    ],
)
def test_length_validation(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        reward_of(spec)


# ---- format ---------------------------------------------------------------------------------


def test_format_checks():
    spec = RuleSpec(kind="format", starts_with="{", ends_with="}", json=True)
    assert score(spec, '  {"a": 1}\n') == 1.0
    assert score(spec, "{not json}") == pytest.approx(2 / 3)
    assert score(spec, "plain") == 0.0
    strict = RuleSpec(kind="format", starts_with="{", ends_with="}", json=True, partial=False)
    assert score(strict, "{not json}") == 0.0
    assert score(RuleSpec(kind="format", json=True), "[1, 2]") == 1.0
    assert score(RuleSpec(kind="format", json=True), "") == 0.0
    assert score(RuleSpec(kind="format", ends_with="."), "Done.") == 1.0


def test_format_without_checks_is_an_error():
    with pytest.raises(ConfigError, match="sets no check"):
        reward_of(RuleSpec(kind="format"))


# ---- the reward ------------------------------------------------------------------------------


def test_weighted_normalized_sum():
    reward = reward_of(
        RuleSpec(kind="regex", pattern="yes", weight=3.0),
        RuleSpec(kind="keywords", keywords=["bad"], mode="forbidden", weight=1.0),
    )
    records = [Record("p")] * 3
    out = reward(["p"] * 3, ["yes", "yes bad", "bad"], records)
    assert out.dtype == torch.float32 and out.shape == (3,)
    assert out.tolist() == pytest.approx([1.0, 0.75, 0.0])


def test_negative_weight_is_a_penalty_and_unnormalized_sum():
    reward = reward_of(RuleSpec(kind="regex", pattern="ok", weight=2.0), RuleSpec(kind="regex", pattern="!", weight=-0.5), normalize=False)
    assert reward(["p", "p"], ["ok", "ok!"], [Record("p")] * 2).tolist() == pytest.approx([2.0, 1.5])


def test_rule_scores_by_name():
    reward = reward_of(RuleSpec(kind="regex", name="has_answer", pattern="answer"), RuleSpec(kind="length", max=1, tolerance=2))
    assert reward.rule_scores("the answer") == {"has_answer": 1.0, "length[1]": 0.5}


def test_empty_rules_and_zero_weights():
    with pytest.raises(ConfigError, match="reward.rules is empty"):
        RuleReward(RuleConfig())
    with pytest.raises(ConfigError, match="every weight is 0"):
        reward_of(RuleSpec(kind="regex", pattern="a", weight=0.0))


def test_unknown_kind_and_misplaced_fields():
    with pytest.raises(ConfigError, match=r"reward\.rules\[0\]\.kind='sentiment' is not a valid choice: must be one of 'regex', 'keywords', 'length', 'format'"):
        reward_of(RuleSpec(kind="sentiment"))
    with pytest.raises(ConfigError, match="field 'pattern' is not used by kind 'keywords' .it belongs to kind regex."):
        reward_of(RuleSpec(kind="keywords", keywords=["x"], pattern="x"))


def test_rules_as_plain_dicts():
    reward = RuleReward(RuleConfig(rules=[{"kind": "regex", "pattern": "x"}]))  # type: ignore[list-item]
    assert reward(["p"], ["x"], [Record("p")]).tolist() == [1.0]
    with pytest.raises(ConfigError, match="unknown field.*patern"):
        RuleReward(RuleConfig(rules=[{"kind": "regex", "patern": "x"}]))  # type: ignore[list-item]


def test_length_mismatch():
    with pytest.raises(InvalidInputError, match="1 prompts, 2 responses"):
        reward_of(RuleSpec(kind="regex", pattern="x"))(["p"], ["a", "b"], [Record("p")])


def test_hydra_structured_config_with_rule_list():
    base = OmegaConf.structured(RuleConfig)
    override = OmegaConf.from_dotlist(["rules=[{kind: length, min: 2, max: 4}, {kind: regex, pattern: 'a+', weight: 0.5}]"])
    cfg = OmegaConf.to_object(OmegaConf.merge(base, override))
    assert cfg.rules[0] == RuleSpec(kind="length", min=2, max=4) and cfg.rules[1].weight == 0.5
    reward = RuleReward(cfg)
    assert reward(["p"], ["aa bb"], [Record("p")]).item() == pytest.approx(1.0)
    with pytest.raises(Exception, match="patern"):
        OmegaConf.merge(base, OmegaConf.from_dotlist(["rules=[{kind: regex, patern: x}]"]))


def test_hook_registers_rule():
    registry = Registry()
    rule.register_rewards(Register(registry, "reward", "rule", "test"))
    reg = registry.get("reward", "rule")
    assert reg.factory is RuleReward and reg.config is RuleConfig


def test_rules_from_the_command_line(compose_typed, builtin_plugins):
    cfg = compose_typed("+reward=rule", "reward.rules=[{kind: regex, pattern: '^Answer'}, {kind: length, min: 1, max: 3, weight: 0.5}]")
    reward = builtin_plugins.get("reward", "rule").build(cfg.reward)
    assert reward(["p", "p"], ["Answer: 4", "no"], [Record("p")] * 2).tolist() == pytest.approx([1.0, 1 / 3])
    with pytest.raises(Exception, match="patern"):
        compose_typed("+reward=rule", "reward.rules=[{kind: regex, patern: x}]")
