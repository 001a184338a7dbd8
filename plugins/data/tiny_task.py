"""The built-in demo task: word-by-word translation into a tiny made-up language.

Prompts are 2-4 words from a 16-word English vocabulary (``translate: big cat sees the fish =``);
the reference is the word-by-word translation (`` mago nyan miru el sakan``). References are short
and fully determined by the prompt, so BLEU gives even a tiny model a dense, honest signal: each
correctly translated word raises unigram precision, each correct neighbour pair the bigram one.

The built-in tiny model (``alignfw.plugins.models.tiny``) was pre-trained by
``scripts/build_tiny_model.py`` on *noisy* translations: each word is translated correctly with
probability 1/4 and by a consistent wrong "decoy" dictionary otherwise. Its greedy output is the
decoy, and samples are right a quarter of the time, so reward can only go up by learning which
translation the reference wants. Evaluation prompts are word sequences never seen in training.

``data.kind`` picks the record kind, so every algorithm runs on the demo: ``reference`` (default:
prompts with their reference, for online algorithms and BLEU), ``sft`` (response = the correct
translation), ``preference`` (chosen = correct, rejected = the decoy translation the base model
prefers), ``ranked`` ([correct, half-correct, decoy], best first) and ``score`` (each word correct
or decoy at random, scored by the fraction of correct words: the unigram precision of BLEU, which
here equals BLEU-1 because every answer has the reference's length). Responses start with
a space, as the tiny model was trained; every kind keeps ``references`` and ``meta["words"]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from alignfw.config import option
from alignfw.hookspecs import hookimpl
from alignfw.types import Record

__all__ = ["TinyTaskConfig", "TinyTask", "SOURCE", "CORRECT", "DECOY", "half_correct", "prompt_of", "translate"]

SOURCE = ["red", "blue", "green", "big", "small", "happy", "cat", "dog", "bird", "fish", "runs", "sleeps", "eats", "sees", "the", "a"]
_TARGET = ["roka", "bilu", "gren", "mago", "piti", "joli", "nyan", "vauv", "piyo", "sakan", "koru", "nemu", "taber", "miru", "el", "un"]
#: the correct dictionary
CORRECT = dict(zip(SOURCE, _TARGET))
#: the decoy dictionary the base model prefers: the same target words, shifted by seven places
DECOY = dict(zip(SOURCE, _TARGET[7:] + _TARGET[:7]))


def prompt_of(words: list[str]) -> str:
    return f"translate: {' '.join(words)} ="


def translate(words: list[str], dictionary: dict[str, str] = CORRECT) -> str:
    return " " + " ".join(dictionary[w] for w in words)


def _is_eval(words: tuple[str, ...]) -> bool:
    # a fixed, seed-independent fifth of all word sequences is held out from training
    return sum((i + 3) * SOURCE.index(w) for i, w in enumerate(words)) % 5 == 0


KINDS = ("reference", "sft", "preference", "ranked", "score")


@dataclass
class TinyTaskConfig:
    """Options of the built-in translation task."""

    n_train: int = option(8192, ge=1)  #: distinct training prompts (sampled with replacement per step)
    n_eval: int = option(256, ge=0)  #: held-out prompts, never seen in training
    min_words: int = option(2, ge=1)
    max_words: int = option(4, ge=1)
    seed: int = 0
    kind: str = option("reference", choices=KINDS)  #: reference, sft, preference, ranked or score (see the module docstring)


def half_correct(words: list[str]) -> str:
    """Words at even positions translated correctly, the others by the decoy dictionary."""
    return " " + " ".join((CORRECT if i % 2 == 0 else DECOY)[w] for i, w in enumerate(words))


class TinyTask:
    """The built-in demo data source: prompts with reference translations."""

    def __init__(self, cfg: TinyTaskConfig) -> None:
        from alignfw.config import validate_options
        from alignfw.exceptions import ConfigError

        validate_options(cfg, "data.")
        if cfg.min_words > cfg.max_words:
            raise ConfigError(f"data.min_words={cfg.min_words} and data.max_words={cfg.max_words}: need min_words <= max_words")
        self.cfg = cfg

    def sequences(self, split: str, n: int) -> list[list[str]]:
        rng = random.Random(f"{self.cfg.seed}-{split}")
        want_eval = split == "eval"
        out: list[list[str]] = []
        while len(out) < n:
            k = rng.randint(self.cfg.min_words, self.cfg.max_words)
            words = tuple(rng.choice(SOURCE) for _ in range(k))
            if _is_eval(words) == want_eval:
                out.append(list(words))
        return out

    def records(self, split: str) -> list[Record]:
        n = self.cfg.n_eval if split == "eval" else self.cfg.n_train
        seqs = self.sequences(split, n)
        if self.cfg.kind == "reference":
            return [Record(prompt=prompt_of(w), references=[translate(w).strip()], meta={"words": w}) for w in seqs]
        rng = random.Random(f"{self.cfg.seed}-{split}-{self.cfg.kind}")
        return [self._record(w, rng) for w in seqs]

    def _record(self, w: list[str], rng: random.Random) -> Record:
        kind, correct = self.cfg.kind, translate(w)
        common = dict(prompt=prompt_of(w), references=[correct.strip()], meta={"words": w})
        if kind == "sft":
            return Record(response=correct, **common)
        if kind == "preference":
            return Record(chosen=correct, rejected=translate(w, DECOY), **common)
        if kind == "ranked":
            return Record(responses=[correct, half_correct(w), translate(w, DECOY)], **common)
        right = [rng.random() < 0.5 for _ in w]
        mixed = " " + " ".join((CORRECT if ok else DECOY)[x] for ok, x in zip(right, w))
        return Record(response=mixed, score=sum(right) / len(w), **common)


@hookimpl
def register_data_sources(register):
    register("tiny_task", TinyTask, config=TinyTaskConfig)
