"""Rule-based reward: a weighted sum of simple, inspectable checks on each response.

Rule rewards are the cheapest reward signal there is and the one least open to reward hacking by
a learned model: DeepSeek-R1 (Guo et al. 2025, https://arxiv.org/abs/2501.12948) trains on
accuracy and format rules alone, and the constitutional / rule-based reward literature (Mu et al.
2024, "Rule Based Rewards for Language Model Safety", https://arxiv.org/abs/2411.01111) combines
many small weighted rules. This module offers four kinds of rule, each scored in ``[0, 1]``:

- ``regex``: 1 if ``pattern`` is found in the response (``match=true``) or is absent (``match=false``);
- ``keywords``: ``required`` keywords present, or ``forbidden`` keywords absent (fraction of them
  with ``partial=true``, all-or-nothing otherwise);
- ``length``: 1 inside ``[min, max]`` words or characters, falling linearly to 0 at ``tolerance``
  units outside the range;
- ``format``: ``starts_with``, ``ends_with`` and ``json`` (the response parses as JSON) checks
  (fraction passed with ``partial=true``).

The reward of a response is ``sum_i weight_i * score_i``, divided by ``sum_i |weight_i|`` when
``normalize`` is on (the default; the reward then lies in ``[-1, 1]``, in ``[0, 1]`` when all
weights are positive). Configured from Hydra as a list of rules::

    python -m alignfw +reward=rule \\
      'reward.rules=[{kind: regex, pattern: "https?://", match: false}, {kind: length, min: 5, max: 40, weight: 0.5}]'

Every rule is checked when the reward is built: a bad regex, an unknown kind, a missing field or a
field that the rule's kind does not use fails at once with a :class:`ConfigError` naming the rule.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from alignfw.config import option, validate_options
from alignfw.exceptions import ConfigError, InvalidInputError
from alignfw.hookspecs import hookimpl
from alignfw.types import Record

__all__ = ["RuleConfig", "RuleReward", "RuleSpec", "compile_rule", "length_score"]

RULE_KINDS = ("regex", "keywords", "length", "format")


@dataclass
class RuleSpec:
    """One rule. ``kind`` says which of the fields below apply; the others must keep their defaults."""

    kind: str = option("regex", choices=RULE_KINDS)  #: "regex", "keywords", "length" or "format"
    name: Optional[str] = None  #: a label for messages; defaults to "<kind>[<index>]"
    weight: float = 1.0  #: this rule's share of the reward (negative: a penalty)
    # regex
    pattern: Optional[str] = None  #: Python regular expression, searched anywhere in the response
    match: bool = True  #: regex: reward a match (true) or its absence (false)
    # regex and keywords
    case_sensitive: bool = False
    # keywords
    keywords: list[str] = field(default_factory=list)
    mode: str = option("required", choices=("required", "forbidden"))  #: keywords: "required" (must appear) or "forbidden" (must not)
    whole_word: bool = False  #: keywords: match whole words only ("cat" does not match "category")
    # keywords and format
    partial: bool = True  #: score the fraction of keywords / checks satisfied instead of all-or-nothing
    # length
    unit: str = option("words", choices=("words", "chars"))  #: length: "words" (whitespace-separated) or "chars"
    min: Optional[int] = option(None, ge=0)  #: length: smallest length with full score (None: no lower bound)
    max: Optional[int] = option(None, ge=0)  #: length: largest length with full score (None: no upper bound)
    tolerance: float = option(10.0, gt=0)  #: length: units outside [min, max] at which the score reaches 0
    # format
    starts_with: Optional[str] = None  #: format: the stripped response starts with this
    ends_with: Optional[str] = None  #: format: the stripped response ends with this
    json: bool = False  #: format: the stripped response is a valid JSON document


#: the fields each kind uses besides kind, name and weight
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "regex": ("pattern", "match", "case_sensitive"),
    "keywords": ("keywords", "mode", "case_sensitive", "whole_word", "partial"),
    "length": ("unit", "min", "max", "tolerance"),
    "format": ("starts_with", "ends_with", "json", "partial"),
}
_COMMON_FIELDS = ("kind", "name", "weight")


@dataclass
class RuleConfig:
    """Options of the rule reward (``+reward=rule``)."""

    rules: list[RuleSpec] = field(default_factory=list)  #: the rules; at least one
    normalize: bool = True  #: divide the weighted sum by the sum of |weights|


def _label(spec: RuleSpec, index: int) -> str:
    name = spec.name or f"{spec.kind}[{index}]"
    return f"reward.rules[{index}] ({name!r}, kind {spec.kind!r})"


def _fail(spec: RuleSpec, index: int, problem: str) -> ConfigError:
    return ConfigError(f"{_label(spec, index)}: {problem}")


def _check_unused_fields(spec: RuleSpec, index: int) -> None:
    """A field that the rule's kind ignores but that was set is almost always a mistake (wrong kind)."""
    used = set(KIND_FIELDS[spec.kind]) | set(_COMMON_FIELDS)
    default = RuleSpec()
    for f in dataclasses.fields(RuleSpec):
        if f.name not in used and getattr(spec, f.name) != getattr(default, f.name):
            users = [k for k, names in KIND_FIELDS.items() if f.name in names]
            problem = f"field {f.name!r} is not used by kind {spec.kind!r} (it belongs to kind {', '.join(users)})"
            raise _fail(spec, index, f"{problem}; remove it or change the kind")


def _regex_rule(spec: RuleSpec, index: int) -> Callable[[str], float]:
    if not spec.pattern:
        raise _fail(spec, index, "needs a pattern, e.g. pattern='^Answer:'")
    try:
        compiled = re.compile(spec.pattern, 0 if spec.case_sensitive else re.IGNORECASE)
    except re.error as e:
        raise _fail(spec, index, f"invalid regular expression {spec.pattern!r}: {e}") from None
    want = spec.match
    return lambda text: 1.0 if (compiled.search(text) is not None) == want else 0.0


def _keywords_rule(spec: RuleSpec, index: int) -> Callable[[str], float]:
    if not spec.keywords or any(not isinstance(k, str) or not k for k in spec.keywords):
        raise _fail(spec, index, f"needs a non-empty list of non-empty keywords, got {spec.keywords!r}")
    flags = 0 if spec.case_sensitive else re.IGNORECASE
    patterns = [re.compile(rf"\b{re.escape(k)}\b" if spec.whole_word else re.escape(k), flags) for k in spec.keywords]
    forbidden, partial = spec.mode == "forbidden", spec.partial

    def score(text: str) -> float:
        present = sum(p.search(text) is not None for p in patterns)
        good = len(patterns) - present if forbidden else present
        return good / len(patterns) if partial else float(good == len(patterns))

    return score


def length_score(length: int, lo: Optional[int], hi: Optional[int], tolerance: float) -> float:
    """1 inside ``[lo, hi]``; outside, ``1 - distance / tolerance``, floored at 0."""
    distance = 0
    if lo is not None and length < lo:
        distance = lo - length
    elif hi is not None and length > hi:
        distance = length - hi
    return max(0.0, 1.0 - distance / tolerance)


def _length_rule(spec: RuleSpec, index: int) -> Callable[[str], float]:
    if spec.min is None and spec.max is None:
        raise _fail(spec, index, "needs min, max or both (the target range)")
    if spec.min is not None and spec.max is not None and spec.min > spec.max:
        raise _fail(spec, index, f"min={spec.min} is larger than max={spec.max}")
    measure: Callable[[str], int] = (lambda t: len(t.split())) if spec.unit == "words" else len
    lo, hi, tol = spec.min, spec.max, spec.tolerance
    return lambda text: length_score(measure(text), lo, hi, tol)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _format_rule(spec: RuleSpec, index: int) -> Callable[[str], float]:
    checks: list[Callable[[str], bool]] = []
    if spec.starts_with is not None:
        checks.append(lambda t, s=spec.starts_with: t.startswith(s))
    if spec.ends_with is not None:
        checks.append(lambda t, s=spec.ends_with: t.endswith(s))
    if spec.json:
        checks.append(_is_json)
    if not checks:
        raise _fail(spec, index, "sets no check; give starts_with, ends_with and/or json=true")
    partial = spec.partial

    def score(text: str) -> float:
        text = text.strip()
        passed = sum(check(text) for check in checks)
        return passed / len(checks) if partial else float(passed == len(checks))

    return score


_BUILDERS: dict[str, Callable[[RuleSpec, int], Callable[[str], float]]] = {
    "regex": _regex_rule,
    "keywords": _keywords_rule,
    "length": _length_rule,
    "format": _format_rule,
}


def compile_rule(spec: RuleSpec, index: int = 0) -> Callable[[str], float]:
    """Check one rule and turn it into ``score(response) -> float in [0, 1]``.

    Args:
        spec: The rule.
        index: Its position in ``reward.rules`` (for error messages).

    Raises:
        ConfigError: The rule is invalid; the message names ``reward.rules[index]`` and the fix.
    """
    validate_options(spec, f"reward.rules[{index}].")
    _check_unused_fields(spec, index)
    return _BUILDERS[spec.kind](spec, index)


class RuleReward:
    """Weighted sum of rule scores (regex, keywords, length, format) for each response."""

    def __init__(self, cfg: RuleConfig) -> None:
        if not cfg.rules:
            raise ConfigError(
                "reward.rules is empty; give at least one rule, e.g. "
                "'reward.rules=[{kind: length, min: 5, max: 40}]'"
            )
        self.cfg = cfg
        self.rules = [_as_spec(r) for r in cfg.rules]
        self.names = [r.name or f"{r.kind}[{i}]" for i, r in enumerate(self.rules)]
        self._scorers = [compile_rule(r, i) for i, r in enumerate(self.rules)]
        self._weights = [float(r.weight) for r in self.rules]
        norm = sum(abs(w) for w in self._weights)
        if cfg.normalize and norm == 0:
            raise ConfigError("reward.rules: every weight is 0, so the reward is always 0; give a rule a non-zero weight")
        self._scale = 1.0 / norm if cfg.normalize else 1.0

    def rule_scores(self, response: str) -> dict[str, float]:
        """Each rule's score in ``[0, 1]`` for one response, by rule name (for logging and debugging)."""
        return {name: score(response) for name, score in zip(self.names, self._scorers)}

    def score(self, response: str) -> float:
        """The (normalized) weighted sum of the rule scores of one response."""
        return self._scale * sum(w * s(response) for w, s in zip(self._weights, self._scorers))

    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> torch.Tensor:
        """Score a batch.

        Args:
            prompts: The prompts, shape ``(B,)`` (rules look at the responses only).
            responses: The generated texts, shape ``(B,)``.
            records: The source records, shape ``(B,)`` (unused).

        Returns:
            Float32 tensor of shape ``(B,)``.
        """
        if len(prompts) != len(responses) or len(responses) != len(records):
            raise InvalidInputError(
                f"rule reward: got {len(prompts)} prompts, {len(responses)} responses and {len(records)} records; they must match"
            )
        return torch.tensor([self.score(r) for r in responses], dtype=torch.float32)  # (B,)


def _as_spec(rule: RuleSpec | dict) -> RuleSpec:
    """Accept plain dicts too (a config built in Python rather than through Hydra)."""
    if isinstance(rule, RuleSpec):
        return rule
    if isinstance(rule, dict):
        known = {f.name for f in dataclasses.fields(RuleSpec)}
        unknown = sorted(set(rule) - known)
        if unknown:
            raise ConfigError(f"rule {rule!r}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(known))}")
        return RuleSpec(**rule)
    raise ConfigError(f"reward.rules must be a list of rules (mappings), got an item {rule!r}")


@hookimpl
def register_rewards(register):
    register("rule", RuleReward, config=RuleConfig)
