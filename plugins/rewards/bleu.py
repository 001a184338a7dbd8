"""BLEU as a reward: sentence BLEU of each response against its record's references.

BLEU (Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation",
https://aclanthology.org/P02-1040) is the geometric mean of modified (clipped) n-gram precisions,
n = 1..max_order, times a brevity penalty. Sentence-level scores need smoothing because a short
sentence often has no matching 4-gram; the smoothing methods are those of Chen & Cherry 2014
("A Systematic Comparison of Smoothing Techniques for Sentence-Level BLEU",
https://aclanthology.org/W14-3346):

- ``"none"``: no smoothing (a zero precision makes the score 0);
- ``"floor"``: method 1, a zero count is replaced by ``smooth_value`` (default 0.1);
- ``"add-k"``: method 2, ``smooth_value`` (default 1) is added to matches and totals for n > 1;
- ``"exp"``: method 3 (NIST / mteval-v13a), the k-th zero precision becomes ``1 / (2^k * total)``.

The reference implementation followed, number for number, is sacrebleu 2.x (Post 2018,
https://github.com/mjpost/sacrebleu, ``sacrebleu.metrics.bleu.BLEU.compute_bleu``): the same
``13a`` tokenizer (mteval-v13a), the closest reference length (ties go to the shorter one), the
same effective-order rule, and the early 0 when nothing matches. Scores here are in ``[0, 1]``;
sacrebleu reports ``100 *`` these. The tests compare both on random inputs. sacrebleu itself is only
a test dependency: this module is plain Python with no imports beyond the standard library and torch.

Notation:
    B: batch size (number of responses).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from alignfw.config import option, validate_options
from alignfw.exceptions import ConfigError, DataError, InvalidInputError
from alignfw.hookspecs import hookimpl
from alignfw.types import Record

__all__ = [
    "BleuConfig",
    "BleuReward",
    "BleuStats",
    "TOKENIZERS",
    "bleu_from_stats",
    "corpus_bleu",
    "segment_stats",
    "sentence_bleu",
    "tokenize_13a",
]

SMOOTH_METHODS = ("exp", "floor", "add-k", "none")
#: sacrebleu's defaults for ``smooth_value`` (Chen & Cherry 2014 use 0.1 for method 1 and 1 for method 2)
SMOOTH_DEFAULTS: dict[str, Optional[float]] = {"exp": None, "floor": 0.1, "add-k": 1.0, "none": None}


# --------------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------------

# mteval-v13a's language-dependent rules as sacrebleu writes them (``tokenizer_re.TokenizerRegexp``):
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols become tokens
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period and comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
]


@functools.lru_cache(maxsize=2**16)
def tokenize_13a(line: str) -> tuple[str, ...]:
    """Tokenize like mteval-v13a (WMT's standard, sacrebleu's default ``13a``).

    Args:
        line: One segment.

    Returns:
        The tokens. Cached, because references repeat across steps of online training.
    """
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _13A_RULES:
        line = pattern.sub(repl, line)
    return tuple(line.split())


def tokenize_char(line: str) -> tuple[str, ...]:
    """Every non-whitespace character is a token (sacrebleu ``char``; for languages without spaces)."""
    return tuple(ch for ch in line if not ch.isspace())


def tokenize_none(line: str) -> tuple[str, ...]:
    """Split on whitespace only (sacrebleu ``none``: the text is already tokenized)."""
    return tuple(line.split())


TOKENIZERS: dict[str, Callable[[str], tuple[str, ...]]] = {"13a": tokenize_13a, "char": tokenize_char, "none": tokenize_none}


# --------------------------------------------------------------------------------------------
# Sufficient statistics and the score
# --------------------------------------------------------------------------------------------


@dataclass
class BleuStats:
    """BLEU's sufficient statistics; they add up over segments into corpus statistics.

    Attributes:
        correct: Clipped n-gram matches, one per order 1..max_order.
        total: Hypothesis n-grams, one per order.
        hyp_len: Hypothesis length in tokens.
        ref_len: Length of the reference closest in length to the hypothesis.
    """

    correct: list[int]
    total: list[int]
    hyp_len: int
    ref_len: int

    def __add__(self, other: BleuStats) -> BleuStats:
        return BleuStats(
            [a + b for a, b in zip(self.correct, other.correct)],
            [a + b for a, b in zip(self.total, other.total)],
            self.hyp_len + other.hyp_len,
            self.ref_len + other.ref_len,
        )


def ngram_counts(tokens: Sequence[str], max_order: int) -> Counter:
    """Counts of every n-gram of ``tokens`` with 1 <= n <= max_order, keyed by token tuples."""
    counts: Counter = Counter()
    for n in range(1, max_order + 1):
        counts.update(zip(*(tokens[i:] for i in range(n))))  # the n-grams as tuples, built in C
    return counts


def reference_counts(references: Sequence[Sequence[str]], max_order: int) -> tuple[Counter, tuple[int, ...]]:
    """The clipping counts of a reference set: for each n-gram, its largest count in any one reference.

    Args:
        references: Tokenized references.
        max_order: Largest n-gram order.

    Returns:
        ``(max_counts, reference_lengths)``.
    """
    merged: Counter = Counter()
    for ref in references:
        merged |= ngram_counts(ref, max_order)  # Counter union keeps the larger count of each n-gram
    return merged, tuple(len(ref) for ref in references)


def closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """The reference length closest to ``hyp_len``; a tie goes to the shorter reference (as in sacrebleu)."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def segment_stats(hyp: Sequence[str], ref_counts: Counter, ref_lens: Sequence[int], max_order: int) -> BleuStats:
    """Modified n-gram precision counts of one tokenized hypothesis (Papineni et al. 2002, section 2.1).

    Each hypothesis n-gram counts as correct at most as often as it occurs in a single reference.

    Args:
        hyp: The tokenized hypothesis.
        ref_counts: Clipping counts from :func:`reference_counts`.
        ref_lens: The reference lengths from :func:`reference_counts`.
        max_order: Largest n-gram order.

    Returns:
        The segment's :class:`BleuStats`.
    """
    hyp_len = len(hyp)
    total = [max(0, hyp_len - n) for n in range(max_order)]  # order n + 1: a text of L tokens has L - n such n-grams
    correct = [0] * max_order
    ref_get = ref_counts.get
    for ngram, count in ngram_counts(hyp, max_order).items():
        in_ref = ref_get(ngram)
        if in_ref:
            correct[len(ngram) - 1] += count if count < in_ref else in_ref
    return BleuStats(correct, total, hyp_len, closest_ref_len(hyp_len, ref_lens))


def brevity_penalty(hyp_len: int, ref_len: int) -> float:
    """``exp(1 - r/c)`` when the hypothesis (length c) is shorter than the reference (length r), else 1."""
    if hyp_len >= ref_len:
        return 1.0
    return math.exp(1.0 - ref_len / hyp_len) if hyp_len > 0 else 0.0


def bleu_from_stats(
    stats: BleuStats,
    *,
    smooth: str = "exp",
    smooth_value: Optional[float] = None,
    effective_order: bool = True,
) -> float:
    """BLEU in ``[0, 1]`` from sufficient statistics, with Chen & Cherry 2014 smoothing.

    Args:
        stats: Segment or corpus statistics; ``len(stats.correct)`` is the maximum order.
        smooth: ``"exp"``, ``"floor"``, ``"add-k"`` or ``"none"`` (see the module docstring).
        smooth_value: The constant of ``"floor"`` and ``"add-k"``; None takes sacrebleu's default.
        effective_order: Average only over the orders the hypothesis has n-grams of, so that a
            2-word response is not scored 0 for having no 3-grams. Recommended for sentence BLEU.

    Returns:
        The score; 0 when no unigram matches at all.
    """
    if smooth not in SMOOTH_DEFAULTS:
        raise ConfigError(f"unknown BLEU smoothing {smooth!r}; use one of {', '.join(SMOOTH_METHODS)}")
    value = SMOOTH_DEFAULTS[smooth] if smooth_value is None else smooth_value
    if not any(stats.correct):
        return 0.0
    max_order = len(stats.correct)
    log_precisions = [-math.inf] * max_order  # orders never reached stay at log(0)
    eff_order, exp_factor = max_order, 1.0
    for n in range(max_order):
        correct, total = float(stats.correct[n]), float(stats.total[n])
        if smooth == "add-k" and n > 0:
            correct, total = correct + value, total + value
        if total == 0:
            break
        if effective_order:
            eff_order = n + 1
        if correct > 0:
            log_precisions[n] = math.log(correct / total)
        elif smooth == "exp":
            exp_factor *= 2
            log_precisions[n] = math.log(1.0 / (exp_factor * total))
        elif smooth == "floor":
            log_precisions[n] = math.log(value / total) if value > 0 else -math.inf
    mean_log = sum(log_precisions[:eff_order]) / eff_order
    if mean_log == -math.inf:
        return 0.0
    return brevity_penalty(stats.hyp_len, stats.ref_len) * math.exp(mean_log)


# --------------------------------------------------------------------------------------------
# Config, public functions and the reward
# --------------------------------------------------------------------------------------------


@dataclass
class BleuConfig:
    """Options of the BLEU reward (``+reward=bleu reward.max_order=2``)."""

    max_order: int = option(4, ge=1)  #: largest n-gram order
    smooth: str = option("exp", choices=SMOOTH_METHODS)  #: "exp" (Chen & Cherry method 3), "floor" (1), "add-k" (2) or "none"
    smooth_value: Optional[float] = option(None, ge=0)  #: constant for "floor" (default 0.1) and "add-k" (default 1)
    #: "13a" (mteval, WMT standard), "char" (non-space characters), "none" (whitespace)
    tokenize: str = option("13a", choices=tuple(TOKENIZERS))
    lowercase: bool = False  #: compare case-insensitively
    effective_order: bool = True  #: skip orders longer than the response (sentence BLEU)


def validate_config(cfg: BleuConfig) -> None:
    """Raise :class:`ConfigError` for an option out of range, naming the option and the fix."""
    validate_options(cfg, "reward.")


class _Scorer:
    """Preprocessing (lowercase, tokenize) plus cached reference statistics for one config."""

    def __init__(self, cfg: BleuConfig) -> None:
        validate_config(cfg)
        self.cfg = cfg
        self._tokenize = TOKENIZERS[cfg.tokenize]
        # references repeat across epochs and rollouts: tokenize and count each reference set once
        self.reference_info = functools.lru_cache(maxsize=2**15)(self._reference_info)

    def tokens(self, text: str) -> tuple[str, ...]:
        # sacrebleu strips trailing whitespace before tokenizing; "13a" depends on it ("word-\n" keeps its "-")
        text = text.rstrip()
        return self._tokenize(text.lower() if self.cfg.lowercase else text)

    def _reference_info(self, references: tuple[str, ...]) -> tuple[Counter, tuple[int, ...]]:
        return reference_counts([self.tokens(r) for r in references], self.cfg.max_order)

    def stats(self, hypothesis: str, references: Sequence[str]) -> BleuStats:
        ref_counts, ref_lens = self.reference_info(tuple(references))
        return segment_stats(self.tokens(hypothesis), ref_counts, ref_lens, self.cfg.max_order)

    def score(self, stats: BleuStats, effective_order: bool) -> float:
        return bleu_from_stats(stats, smooth=self.cfg.smooth, smooth_value=self.cfg.smooth_value, effective_order=effective_order)


def _check_references(references: Sequence[str], where: str) -> None:
    if isinstance(references, str) or not references:
        raise InvalidInputError(f"{where}: references must be a non-empty list of strings, got {references!r}")


def sentence_bleu(hypothesis: str, references: Sequence[str], cfg: Optional[BleuConfig] = None) -> float:
    """Sentence BLEU in ``[0, 1]`` of one hypothesis against one or more references.

    Args:
        hypothesis: The text to score.
        references: One or more reference texts.
        cfg: Options; defaults to :class:`BleuConfig()` (sacrebleu's ``sentence_bleu`` defaults).

    Returns:
        The score (``sacrebleu.sentence_bleu(...).score / 100``).
    """
    _check_references(references, "sentence_bleu")
    scorer = _Scorer(cfg or BleuConfig())
    return scorer.score(scorer.stats(hypothesis, references), scorer.cfg.effective_order)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], cfg: Optional[BleuConfig] = None) -> float:
    """Corpus BLEU in ``[0, 1]``: statistics are summed over segments before the score is taken.

    Unlike sacrebleu, whose ``references`` are reference *streams* (one list per reference set),
    ``references[i]`` here are the references of ``hypotheses[i]``, so the number of references may
    differ per segment.

    Args:
        hypotheses: The texts to score, shape ``(N,)``.
        references: ``references[i]`` is a non-empty list of references for ``hypotheses[i]``.
        cfg: Options. The default is sacrebleu's ``corpus_bleu``: ``BleuConfig(effective_order=False)``.

    Returns:
        The score.
    """
    if len(hypotheses) != len(references):
        raise InvalidInputError(f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} reference lists")
    scorer = _Scorer(cfg or BleuConfig(effective_order=False))
    total = BleuStats([0] * scorer.cfg.max_order, [0] * scorer.cfg.max_order, 0, 0)
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        _check_references(refs, f"corpus_bleu segment {i}")
        total = total + scorer.stats(hyp, refs)
    return scorer.score(total, scorer.cfg.effective_order)


class BleuReward:
    """Sentence BLEU of each response against ``record.references``, in ``[0, 1]``."""

    def __init__(self, cfg: BleuConfig) -> None:
        self.cfg = cfg
        self._scorer = _Scorer(cfg)

    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> torch.Tensor:
        """Score a batch.

        Args:
            prompts: The prompts, shape ``(B,)`` (unused; BLEU looks at the references only).
            responses: The generated texts, shape ``(B,)``.
            records: The records the prompts came from; each needs ``references``.

        Returns:
            Float32 tensor of shape ``(B,)``.

        Raises:
            DataError: A record has no references.
            InvalidInputError: The three sequences differ in length.
        """
        if not len(prompts) == len(responses) == len(records):
            raise InvalidInputError(
                f"bleu reward: got {len(prompts)} prompts, {len(responses)} responses and {len(records)} records; they must match"
            )
        scores = [self._score_one(i, response, record) for i, (response, record) in enumerate(zip(responses, records))]
        return torch.tensor(scores, dtype=torch.float32)  # (B,)

    def _score_one(self, index: int, response: str, record: Record) -> float:
        refs = record.references
        if not refs or isinstance(refs, str):
            raise DataError(
                f"bleu reward: record {index} of the batch (prompt {record.prompt[:60]!r}) has no references "
                f"(references={refs!r}). BLEU needs reference answers: the data source must provide a "
                "'references' or 'reference' column (with data sources from alignfw.plugins.data.sources, "
                "set data.reference_key=<column>)."
            )
        return self._scorer.score(self._scorer.stats(response, refs), self.cfg.effective_order)


@hookimpl
def register_rewards(register):
    register("bleu", BleuReward, config=BleuConfig)
