"""The demo task's record kinds: the default records are unchanged, each offline kind is what it says."""

from __future__ import annotations

import pytest

from alignfw.exceptions import ConfigError
from alignfw.plugins.data.tiny_task import CORRECT, DECOY, TinyTask, TinyTaskConfig, half_correct, translate


def _records(kind, split="train", n=64):
    return TinyTask(TinyTaskConfig(kind=kind, n_train=n, n_eval=n)).records(split)


def test_default_records_are_prompts_with_references():
    recs = _records("reference")
    assert recs == TinyTask(TinyTaskConfig(n_train=64, n_eval=64)).records("train")
    assert all(r.kind == "reference" and r.references == [translate(r.meta["words"]).strip()] for r in recs)


@pytest.mark.parametrize("kind", ["sft", "preference", "ranked", "score"])
def test_offline_kinds_share_the_prompts_and_say_their_kind(kind):
    base, recs = _records("reference", "eval"), _records(kind, "eval")
    assert [r.prompt for r in recs] == [r.prompt for r in base]  # same held-out prompts for every kind
    assert all(r.kind == kind for r in recs)


def test_answers_follow_the_dictionaries():
    words = ["big", "cat", "sees", "the"]
    assert half_correct(words) == " " + " ".join([CORRECT["big"], DECOY["cat"], CORRECT["sees"], DECOY["the"]])
    for r in _records("preference"):
        assert (r.chosen, r.rejected) == (translate(r.meta["words"]), translate(r.meta["words"], DECOY))
    for r in _records("ranked"):
        w = r.meta["words"]
        assert r.responses == [translate(w), half_correct(w), translate(w, DECOY)]
    scores = set()
    for r in _records("score", n=256):
        got = r.response.split()
        right = [g == CORRECT[w] for g, w in zip(got, r.meta["words"])]
        assert all(ok or g == DECOY[w] for ok, g, w in zip(right, got, r.meta["words"]))
        assert r.score == pytest.approx(sum(right) / len(right))
        scores.add(r.score)
    assert {0.0, 1.0} <= scores and len(scores) > 4  # a real mix


def test_unknown_kind_is_named():
    with pytest.raises(ConfigError, match="data.kind='pairs'.*preference"):
        TinyTask(TinyTaskConfig(kind="pairs"))
