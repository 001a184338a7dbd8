"""Tests of the human-feedback similarity reward: the similarity measures, the ratings, the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from alignfw.exceptions import ConfigError, DataError, InvalidInputError
from alignfw.plugins.rewards import feedback
from alignfw.plugins.rewards.feedback import FeedbackConfig, FeedbackReward, char_f1, token_f1
from alignfw.registry import Register, Registry
from alignfw.types import Record

GOOD = "Paris is the capital of France."
BAD = "I think it is London, but I am not sure."
PROMPT = "What is the capital of France?"


def ratings_file(tmp_path: Path, rows: list[dict] | None = None, name: str = "ratings.jsonl") -> str:
    rows = rows if rows is not None else [
        {"prompt": PROMPT, "response": GOOD, "feedback": 1},
        {"prompt": PROMPT, "response": BAD, "feedback": -1},
        {"prompt": "Say hi", "response": "hello there", "feedback": 1},
    ]
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def call(reward: FeedbackReward, responses: list[str], records: list[Record]) -> list[float]:
    out = reward([r.prompt for r in records], responses, records)
    assert out.dtype == torch.float32 and out.shape == (len(responses),)
    return out.tolist()


# ---- similarity measures --------------------------------------------------------------------


def test_token_f1_known_values():
    assert token_f1("the cat sat", "the cat") == pytest.approx(0.8)  # P = 2/3, R = 1
    assert token_f1("The Cat!", "the cat") == 1.0
    assert token_f1("The Cat", "the cat", lowercase=False) == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "a") == 0.0
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)  # multiset overlap: one a, one b


def test_char_f1_known_values():
    # n=1: {a,b,c} vs {a,b,d} -> 2/3; n=2: {ab,bc} vs {ab,bd} -> 1/2; mean P = mean R = 7/12
    assert char_f1("abc", "abd", order=2) == pytest.approx(7 / 12)
    assert char_f1("a b c", "abc") == 1.0  # whitespace is ignored
    assert char_f1("", "") == 1.0 and char_f1("abc", "") == 0.0
    assert char_f1("xyz", "abc") == 0.0
    assert char_f1("ab", "abcdef", order=4) > 0  # orders longer than "ab" are skipped, not zero


texts = st.text(alphabet="abc de", max_size=20)


@settings(max_examples=200, deadline=None)
@given(a=texts, b=texts, which=st.sampled_from(["char", "token"]))
def test_similarities_are_symmetric_bounded_and_reflexive(a, b, which):
    sim = char_f1 if which == "char" else token_f1
    s = sim(a, b)
    assert 0.0 <= s <= 1.0 + 1e-12
    assert s == pytest.approx(sim(b, a))
    assert sim(a, a) == pytest.approx(1.0)


# ---- the reward -----------------------------------------------------------------------------


@pytest.mark.parametrize("similarity", ["char_f1", "token_f1"])
def test_good_like_beats_neutral_beats_bad_like(tmp_path, similarity):
    reward = FeedbackReward(FeedbackConfig(path=ratings_file(tmp_path), similarity=similarity))
    rec = Record(PROMPT)
    good, neutral, bad = call(reward, [GOOD, "Lyon, maybe?", BAD], [rec] * 3)
    assert good > neutral > bad
    assert good == pytest.approx(1.0 - reward.similarity(GOOD, BAD))
    assert bad == pytest.approx(reward.similarity(BAD, GOOD) - 1.0)
    assert -1.0 <= bad and good <= 1.0


def test_only_positive_ratings(tmp_path):
    reward = FeedbackReward(FeedbackConfig(path=ratings_file(tmp_path)))
    assert call(reward, ["hello there", "goodbye"], [Record("Say hi")] * 2)[0] == pytest.approx(1.0)


def test_aggregate_max_versus_mean(tmp_path):
    rows = [{"prompt": "p", "response": "alpha beta", "feedback": 1}, {"prompt": "p", "response": "gamma delta", "feedback": 1}]
    path = ratings_file(tmp_path, rows)
    best = FeedbackReward(FeedbackConfig(path=path, similarity="token_f1"))
    mean = FeedbackReward(FeedbackConfig(path=path, similarity="token_f1", aggregate="mean"))
    assert call(best, ["alpha beta"], [Record("p")]) == [1.0]
    assert call(mean, ["alpha beta"], [Record("p")]) == [pytest.approx(0.5)]


def test_prompts_match_after_collapsing_whitespace(tmp_path):
    reward = FeedbackReward(FeedbackConfig(path=ratings_file(tmp_path)))
    assert call(reward, [GOOD], [Record("  What is the capital\nof France? ")])[0] > 0.5


def test_ratings_from_records_and_meta_without_a_file():
    reward = FeedbackReward(FeedbackConfig(similarity="token_f1"))
    own = Record("q", response="yes indeed", feedback=1)
    meta = Record("q", meta={"rated_responses": [{"response": "no way", "feedback": -1}, {"response": "yes", "feedback": 1}]})
    assert call(reward, ["yes indeed", "no way"], [own, meta]) == [pytest.approx(1.0), pytest.approx(-1.0 + 0.0)]


def test_file_and_record_ratings_merge_and_deduplicate(tmp_path):
    reward = FeedbackReward(FeedbackConfig(path=ratings_file(tmp_path), similarity="token_f1", aggregate="mean"))
    rec = Record(PROMPT, response=GOOD, feedback=1)  # the same rating as in the file
    assert reward.rated_answers(rec, 0) == [(1, GOOD), (-1, BAD)]
    extra = Record(PROMPT, response="Paris", feedback=1)
    assert reward.rated_answers(extra, 0) == [(1, GOOD), (-1, BAD), (1, "Paris")]
    no_records = FeedbackReward(FeedbackConfig(path=ratings_file(tmp_path), use_records=False))
    assert no_records.rated_answers(extra, 0) == [(1, GOOD), (-1, BAD)]


def test_csv_ratings_with_mapped_columns(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("question,answer,thumbs\nq,good answer,+1\nq,bad answer,-1\n", encoding="utf-8")
    cfg = FeedbackConfig(path=str(path), prompt_key="question", response_key="answer", feedback_key="thumbs", similarity="token_f1")
    reward = FeedbackReward(cfg)
    assert call(reward, ["good answer", "bad answer"], [Record("q")] * 2) == [pytest.approx(0.5), pytest.approx(-0.5)]


# ---- errors ---------------------------------------------------------------------------------


def test_prompt_without_ratings(tmp_path):
    path = ratings_file(tmp_path)
    reward = FeedbackReward(FeedbackConfig(path=path))
    with pytest.raises(DataError) as e:
        call(reward, [GOOD, "x"], [Record(PROMPT), Record("Unrated prompt")])
    msg = str(e.value)
    assert "no rated answers for record 1" in msg and "'Unrated prompt'" in msg
    assert "is not in reward.path=" in msg and "(2 prompts)" in msg and "reward.missing=zero" in msg
    lenient = FeedbackReward(FeedbackConfig(path=path, missing="zero"))
    assert call(lenient, ["x"], [Record("Unrated prompt")]) == [0.0]


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        FeedbackReward(FeedbackConfig(path=str(tmp_path / "nope.jsonl")))
    msg = str(e.value)
    assert "nope.jsonl" in msg and "does not exist" in msg and "check reward.path" in msg and "data." not in msg


def test_missing_feedback_column_names_line_and_reward_option(tmp_path):
    path = ratings_file(tmp_path, [{"prompt": "p", "response": "r", "feedback": 1}, {"prompt": "p", "response": "r", "rating": 1}])
    with pytest.raises(DataError) as e:
        FeedbackReward(FeedbackConfig(path=path))
    assert str(e.value) == (
        "line 2 of ratings.jsonl: missing column 'feedback' (each rating needs a prompt, a response and a feedback of +1 / -1) "
        "(columns present: prompt, response, rating); set reward.feedback_key=rating"
    )


def test_missing_response_column_and_bad_feedback_value(tmp_path):
    with pytest.raises(DataError, match="line 1 of ratings.jsonl: missing column 'answer'"):
        FeedbackReward(FeedbackConfig(path=ratings_file(tmp_path), response_key="answer"))
    path = ratings_file(tmp_path, [{"prompt": "p", "response": "r", "feedback": 5}], name="bad.jsonl")
    with pytest.raises(DataError, match="line 1 of bad.jsonl: column 'feedback' is feedback and must be \\+1 \\(good\\) or -1 \\(bad\\)"):
        FeedbackReward(FeedbackConfig(path=path))


def test_bad_meta_ratings():
    reward = FeedbackReward(FeedbackConfig())
    with pytest.raises(DataError, match=r"record 0 of the batch, meta\['rated_responses'\]\[1\] must be"):
        reward(["q"], ["a"], [Record("q", meta={"rated_responses": [{"response": "a", "feedback": 1}, {"response": "b", "feedback": 2}]})])
    with pytest.raises(DataError, match="must be a list"):
        reward(["q"], ["a"], [Record("q", meta={"rated_responses": "a"})])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(use_records=False), "has no rated answers: set reward.path"),
        (dict(similarity="cosine"), "reward.similarity='cosine' is not a valid choice: must be one of 'char_f1', 'token_f1'"),
        (dict(aggregate="min"), "reward.aggregate='min'"),
        (dict(missing="skip"), "reward.missing='skip'"),
        (dict(char_order=0), "reward.char_order=0"),
        (dict(format="xml"), "reward.format='xml'"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as e:
        FeedbackReward(FeedbackConfig(**options))
    assert message in str(e.value)


def test_length_mismatch():
    with pytest.raises(InvalidInputError, match="1 prompts, 2 responses"):
        FeedbackReward(FeedbackConfig())(["q"], ["a", "b"], [Record("q")])


def test_structured_config_and_hook(tmp_path):
    cfg = OmegaConf.merge(OmegaConf.structured(FeedbackConfig), OmegaConf.from_dotlist([f"path={ratings_file(tmp_path)}", "aggregate=mean"]))
    reward = FeedbackReward(OmegaConf.to_object(cfg))
    assert reward.cfg.aggregate == "mean"
    registry = Registry()
    feedback.register_rewards(Register(registry, "reward", "feedback", "test"))
    reg = registry.get("reward", "feedback")
    assert reg.factory is FeedbackReward and reg.config is FeedbackConfig


def test_feedback_from_the_command_line(compose_typed, builtin_plugins, tmp_path):
    cfg = compose_typed("+reward=feedback", f"reward.path={ratings_file(tmp_path)}", "reward.similarity=token_f1")
    reward = builtin_plugins.get("reward", "feedback").build(cfg.reward)
    assert call(reward, [GOOD], [Record(PROMPT)])[0] > 0.5
