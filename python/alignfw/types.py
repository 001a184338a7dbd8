"""The data shapes that cross plugin boundaries: records, reward callables, algorithm protocol.

One :class:`Record` type carries every kind of example a data source yields; which fields are set
says what it is (``Record.kind``). Keeping one type keeps collate code and plugin signatures simple.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    import torch

__all__ = ["Algorithm", "Record", "RewardFn", "RECORD_KINDS"]

RECORD_KINDS = ("prompt", "sft", "ranked", "preference", "feedback", "score", "reference")


@dataclass
class Record:
    """One example. ``prompt`` is always set; the other fields say which kind it is.

    - prompt only: a prompt for online algorithms (``kind == "prompt"``);
    - ``response``: supervised fine-tuning (``"sft"``);
    - ``responses``: k answers ranked best first (``"ranked"``);
    - ``chosen`` and ``rejected``: a preference pair (``"preference"``);
    - ``response`` and ``feedback`` (+1 / -1, as in MOSS-RLHF): rated answer (``"feedback"``);
    - ``response`` and ``score``: scored answer (``"score"``);
    - ``references``: reference answers for BLEU and similar rewards (``"reference"``).
    ``meta`` keeps any other column of the source row.
    """

    prompt: str
    response: str | None = None
    responses: list[str] | None = None
    chosen: str | None = None
    rejected: str | None = None
    feedback: int | None = None
    score: float | None = None
    references: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.chosen is not None or self.rejected is not None:
            return "preference"
        if self.responses is not None:
            return "ranked"
        if self.response is not None and self.feedback is not None:
            return "feedback"
        if self.response is not None and self.score is not None:
            return "score"
        if self.response is not None:
            return "sft"
        if self.references is not None:
            return "reference"
        return "prompt"


@runtime_checkable
class RewardFn(Protocol):
    """A reward: ``(prompts, responses, records) -> (B,)`` sequence-level scores.

    Any plain function of this shape is a reward; returning a list of floats is fine, the caller
    converts. Token-level rewards may return ``(B, T)`` aligned with the response tokens.
    """

    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> torch.Tensor | Sequence[float]: ...


@runtime_checkable
class Algorithm(Protocol):
    """What the pipeline drives. Offline algorithms get records with responses; online ones get
    prompt records and roll out themselves. ``step`` returns scalar metrics for logging."""

    def step(self, records: list[Record]) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
