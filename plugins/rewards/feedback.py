"""Human-feedback similarity reward: be like the answers people liked, unlike the ones they did not.

MOSS-RLHF (Zheng et al. 2023, "Secrets of RLHF in Large Language Models Part I: PPO",
https://arxiv.org/abs/2307.04964, https://github.com/OpenLMLab/MOSS-RLHF) collects answers rated
+1 / -1 by people. Training a reward model on them is one use; this reward uses them directly, as a
nearest-neighbour judge. For a response ``r`` to prompt ``p`` with positively rated answers ``P``
and negatively rated answers ``N`` for the same prompt::

    reward(r) = agg_{a in P} sim(r, a) - agg_{a in N} sim(r, a)        (an empty group contributes 0)

with ``agg`` = max (default: close to *some* good answer is good enough) or mean, so the reward lies
in ``[-1, 1]``. Two similarity measures, both in ``[0, 1]`` and 1 for identical texts:

- ``char_f1`` (default): character n-gram F-score in the manner of chrF (Popović 2015,
  https://aclanthology.org/W15-3049), with beta = 1 so that it is symmetric: whitespace is dropped,
  n-gram precision and recall are averaged over n = 1..``char_order`` (orders that both texts have),
  then combined as ``2PR / (P + R)``. Robust to small inflection and tokenization differences.
- ``token_f1``: bag-of-words F1 over lowercased ``\\w+`` tokens, the SQuAD answer metric
  (Rajpurkar et al. 2016, https://arxiv.org/abs/1606.05250).

Rated answers come from a file (``reward.path``: JSONL, CSV, Parquet, ... with prompt, response and
feedback columns, read by :mod:`alignfw.plugins.data.sources`, so the same column options and error
messages apply), and, with ``use_records``, from the batch's own records: a record of kind
``"feedback"`` rates its ``response``, and ``record.meta[meta_key]`` may hold a list of
``{"response": ..., "feedback": ±1}``. Prompts are matched after collapsing whitespace.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from alignfw.config import option, validate_options
from alignfw.exceptions import ConfigError, DataError, InvalidInputError
from alignfw.hookspecs import hookimpl
from alignfw.plugins.data.sources import FORMATS, FileSourceConfig, read_rows, rows_to_records
from alignfw.types import Record

__all__ = ["FeedbackConfig", "FeedbackReward", "SIMILARITIES", "char_f1", "token_f1"]


# --------------------------------------------------------------------------------------------
# Similarity measures
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+")


def _f1(overlap: int, n_a: int, n_b: int) -> float:
    if n_a == 0 or n_b == 0 or overlap == 0:
        return 0.0
    precision, recall = overlap / n_a, overlap / n_b
    return 2 * precision * recall / (precision + recall)


def token_f1(a: str, b: str, *, lowercase: bool = True) -> float:
    """SQuAD-style bag-of-words F1 of two texts (1.0 when both have no tokens)."""
    ta = Counter(_TOKEN.findall(a.lower() if lowercase else a))
    tb = Counter(_TOKEN.findall(b.lower() if lowercase else b))
    if not ta and not tb:
        return 1.0
    return _f1(sum((ta & tb).values()), sum(ta.values()), sum(tb.values()))


def char_ngrams(text: str, order: int, *, lowercase: bool = True) -> list[Counter]:
    """Counts of character n-grams, n = 1..order, of ``text`` with whitespace removed."""
    chars = "".join((text.lower() if lowercase else text).split())
    return [Counter(chars[i : i + n] for i in range(len(chars) - n + 1)) for n in range(1, order + 1)]


def char_f1_from_ngrams(a: list[Counter], b: list[Counter]) -> float:
    """chrF with beta = 1 from precomputed :func:`char_ngrams` of two texts."""
    if not a[0] and not b[0]:
        return 1.0  # both empty
    precisions, recalls = [], []
    for ca, cb in zip(a, b):
        if not ca or not cb:
            continue  # an order longer than one of the texts says nothing (chrF's effective order)
        overlap = sum((ca & cb).values())
        precisions.append(overlap / sum(ca.values()))
        recalls.append(overlap / sum(cb.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def char_f1(a: str, b: str, *, order: int = 4, lowercase: bool = True) -> float:
    """Character n-gram F1 (chrF, beta = 1) of two texts, in ``[0, 1]``."""
    return char_f1_from_ngrams(char_ngrams(a, order, lowercase=lowercase), char_ngrams(b, order, lowercase=lowercase))


SIMILARITIES = ("char_f1", "token_f1")


# --------------------------------------------------------------------------------------------
# Config and reward
# --------------------------------------------------------------------------------------------


@dataclass
class FeedbackConfig:
    """Options of the feedback-similarity reward (``+reward=feedback reward.path=ratings.jsonl``)."""

    path: Optional[str] = None  #: file of rated answers (prompt, response, feedback ±1); any format data=file reads
    format: str = option("auto", choices=("auto", *FORMATS))  #: that file's format ("auto": by extension)
    prompt_key: str = "prompt"
    response_key: str = "response"
    feedback_key: str = "feedback"
    similarity: str = option("char_f1", choices=SIMILARITIES)  #: "char_f1" (character n-gram F1, chrF-like) or "token_f1" (word F1)
    char_order: int = option(4, ge=1)  #: char_f1: largest character n-gram
    lowercase: bool = True  #: compare case-insensitively
    aggregate: str = option("max", choices=("max", "mean"))  #: "max" or "mean" similarity over the rated answers of each sign
    use_records: bool = True  #: also use ratings carried by the batch's records (feedback kind, meta)
    meta_key: str = "rated_responses"  #: record.meta key holding [{"response": ..., "feedback": ±1}, ...]
    missing: str = option("error", choices=("error", "zero"))  #: a prompt with no rated answers: "error" or "zero" (reward 0)


def _normalize_prompt(prompt: str) -> str:
    return " ".join(prompt.split())


def _validate(cfg: FeedbackConfig) -> None:
    validate_options(cfg, "reward.")
    if not cfg.path and not cfg.use_records:
        raise ConfigError(
            "the feedback reward has no rated answers: set reward.path to a file with prompt, response and feedback "
            "columns, or reward.use_records=true to use the ratings in the training records"
        )


def load_ratings(cfg: FeedbackConfig) -> dict[str, list[tuple[int, str]]]:
    """Rated answers by (whitespace-normalized) prompt, read from ``cfg.path``.

    Raises:
        DataError: The file is missing, empty, or a row lacks a column or has feedback other than ±1;
            the message names the file and line.
    """
    columns = FileSourceConfig(
        path=cfg.path, kind="feedback", prompt_key=cfg.prompt_key, response_key=cfg.response_key, feedback_key=cfg.feedback_key
    )
    rows = read_rows(cfg.path, cfg.format, opt="reward")  # type: ignore[arg-type]
    records = rows_to_records(rows, columns, opt="reward", why=" (each rating needs a prompt, a response and a feedback of +1 / -1)")
    index: dict[str, list[tuple[int, str]]] = {}
    for rec in records:
        index.setdefault(_normalize_prompt(rec.prompt), []).append((int(rec.feedback), rec.response))  # type: ignore[arg-type]
    return index


def _meta_ratings(record: Record, key: str, index: int) -> list[tuple[int, str]]:
    items = record.meta.get(key)
    if items is None:
        return []
    where = f"feedback reward: record {index} of the batch, meta[{key!r}]"
    if not isinstance(items, (list, tuple)):
        raise DataError(f"{where} must be a list of {{'response': str, 'feedback': 1 or -1}}, got {type(items).__name__}")
    out = []
    for j, item in enumerate(items):
        fb = item.get("feedback") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(item.get("response"), str) or isinstance(fb, bool) or fb not in (1, -1):
            raise DataError(f"{where}[{j}] must be {{'response': str, 'feedback': 1 or -1}}, got {item!r}")
        out.append((int(item["feedback"]), item["response"]))
    return out


class FeedbackReward:
    """Similarity to positively rated answers minus similarity to negatively rated ones, in ``[-1, 1]``."""

    def __init__(self, cfg: FeedbackConfig) -> None:
        _validate(cfg)
        self.cfg = cfg
        self.ratings = load_ratings(cfg) if cfg.path else {}
        self._agg: Callable[[list[float]], float] = max if cfg.aggregate == "max" else (lambda xs: sum(xs) / len(xs))
        self._features: dict[str, Any] = {}  # rated answer text -> precomputed n-grams (answers repeat every step)

    def _feature(self, text: str) -> Any:
        if self.cfg.similarity == "token_f1":
            return text
        feat = self._features.get(text)
        if feat is None:
            feat = char_ngrams(text, self.cfg.char_order, lowercase=self.cfg.lowercase)
            if len(self._features) < 100_000:
                self._features[text] = feat
        return feat

    def similarity(self, a: str, b: str) -> float:
        """The configured similarity of two texts, in ``[0, 1]``."""
        if self.cfg.similarity == "token_f1":
            return token_f1(a, b, lowercase=self.cfg.lowercase)
        return char_f1_from_ngrams(self._feature(a), self._feature(b))

    def rated_answers(self, record: Record, index: int) -> list[tuple[int, str]]:
        """``(feedback, answer)`` pairs for a record's prompt: from the file, then from the record itself."""
        rated = list(self.ratings.get(_normalize_prompt(record.prompt), ()))
        if self.cfg.use_records:
            if record.kind == "feedback":
                rated.append((int(record.feedback), record.response))  # type: ignore[arg-type]
            rated.extend(_meta_ratings(record, self.cfg.meta_key, index))
        return list(dict.fromkeys(rated))  # the same rating from file and record counts once

    def score(self, response: str, rated: Sequence[tuple[int, str]]) -> float:
        """``agg sim(response, good) - agg sim(response, bad)`` over the rated answers."""
        good = [self.similarity(response, a) for f, a in rated if f > 0]
        bad = [self.similarity(response, a) for f, a in rated if f < 0]
        return (self._agg(good) if good else 0.0) - (self._agg(bad) if bad else 0.0)

    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> torch.Tensor:
        """Score a batch.

        Args:
            prompts: The prompts, shape ``(B,)``.
            responses: The generated texts, shape ``(B,)``.
            records: The source records, shape ``(B,)``; their prompts select the rated answers.

        Returns:
            Float32 tensor of shape ``(B,)`` with values in ``[-1, 1]``.

        Raises:
            DataError: A prompt has no rated answers and ``missing="error"``.
        """
        if len(prompts) != len(responses) or len(responses) != len(records):
            raise InvalidInputError(
                f"feedback reward: got {len(prompts)} prompts, {len(responses)} responses and {len(records)} records; they must match"
            )
        scores = []
        for i, (response, record) in enumerate(zip(responses, records)):
            rated = self.rated_answers(record, i)
            if not rated:
                scores.append(self._no_ratings(record, i))
                continue
            scores.append(self.score(response, rated))
        return torch.tensor(scores, dtype=torch.float32)  # (B,)

    def _no_ratings(self, record: Record, index: int) -> float:
        if self.cfg.missing == "zero":
            return 0.0
        source = f"is not in reward.path={self.cfg.path!r} ({len(self.ratings)} prompts)" if self.cfg.path else "has no reward.path file"
        raise DataError(
            f"feedback reward: no rated answers for record {index} of the batch (prompt {record.prompt[:60]!r}): the prompt "
            f"{source} and the record carries no rating (a feedback record or meta[{self.cfg.meta_key!r}]). "
            "Check that reward.path holds this data's prompts, or set reward.missing=zero to score such prompts 0"
        )


@hookimpl
def register_rewards(register):
    register("feedback", FeedbackReward, config=FeedbackConfig)
