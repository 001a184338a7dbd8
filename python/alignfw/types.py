"""The data shapes that cross plugin boundaries: records, reward callables, the algorithm protocol.

One :class:`Record` type carries every kind of example a data source yields; which fields are set
says what it is (``Record.kind``). Keeping one type keeps collate code and plugin signatures simple.
:func:`sft_response` and :func:`preference_pairs` read the training targets out of records.

Conversational rows (message lists, as in TRL) keep their messages in ``Record.conversation``; their
text fields are rendered by the model's chat template (:func:`alignfw.models.chat.render_records`,
which the pipeline and :func:`alignfw.rollout.rollout` call) into :class:`ChatText` strings, which
remember which special-token spellings came from the messages so that they are never encoded as
special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from alignfw.exceptions import DataError

if TYPE_CHECKING:
    import torch

__all__ = [
    "RECORD_KINDS",
    "Algorithm",
    "ChatText",
    "Conversation",
    "Message",
    "UnrenderedChat",
    "Evaluates",
    "Record",
    "RewardFn",
    "SavesModel",
    "preference_pairs",
    "sft_response",
]

RECORD_KINDS = ("prompt", "sft", "ranked", "preference", "feedback", "score", "reference")

#: one chat message: ``{"role": "user", "content": "..."}`` (other keys are passed to the template)
Message = dict[str, Any]


@dataclass
class Conversation:
    """The messages of a conversational record, by the :class:`Record` field they render into.

    ``prompt`` is the conversation so far (its last message is the user's, or an assistant message
    to continue); ``response`` / ``chosen`` / ``rejected`` / each of ``responses`` are the messages
    that follow it (usually one assistant message). ``where`` names the source row for messages
    (``"line 3 of train.jsonl"``).
    """

    prompt: list[Message]
    response: list[Message] | None = None
    responses: list[list[Message]] | None = None
    chosen: list[Message] | None = None
    rejected: list[Message] | None = None
    where: str = ""


class ChatText(str):
    """A text field rendered by a chat template: the string, plus ``literal``, the ``(start, end)``
    spans of special-token spellings that come from message contents (user text). Encoding keeps
    the template's own special tokens and turns the literal spans into plain-text ids.

    Slicing or concatenating gives a plain ``str`` (the spans no longer apply).
    """

    literal: tuple[tuple[int, int], ...]

    def __new__(cls, text: str, literal: Sequence[tuple[int, int]] = ()) -> ChatText:
        obj = super().__new__(cls, text)
        obj.literal = tuple((int(a), int(b)) for a, b in literal)
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChatText, (str(self), self.literal))


class UnrenderedChat(str):
    """A text field of a conversational record before the chat template ran: the message contents
    joined by blank lines, for messages and logs. Encoding one is an error (render first)."""

    where: str

    def __new__(cls, text: str, where: str = "") -> UnrenderedChat:
        obj = super().__new__(cls, text)
        obj.where = where
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (UnrenderedChat, (str(self), self.where))


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

    ``conversation`` is set for conversational rows (message lists): the text fields then hold the
    rendered conversation (:class:`ChatText`, after :func:`alignfw.models.chat.render_records`;
    :class:`UnrenderedChat` before) and rewards find the messages here.
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
    conversation: Conversation | None = None

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
    For conversational records ``prompts`` are the rendered prompts (:class:`ChatText`),
    ``responses`` the answers' text, and ``records[i].conversation`` holds the messages.
    """

    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> torch.Tensor | Sequence[float]: ...


@runtime_checkable
class Algorithm(Protocol):
    """What the pipeline drives; what ``register_algorithms`` factories return.

    Offline algorithms get records with responses; online ones get prompt records and roll out
    themselves (:func:`alignfw.rollout.rollout`). ``step`` returns scalar metrics for logging.
    ``state_dict`` holds everything exact resume needs (optimizer, schedules, controllers, a
    reference model that changes); tensors and JSON-able values only, never pickled objects.

    An algorithm's ``__init__(cfg, ctx)`` builds what it trains: value head and reference through
    the :class:`~alignfw.models.PolicyModel`, then ``ctx.model.parallelize(ctx.distributed.strategy)``
    (explicit; nothing in one process), then its optimizer over ``ctx.model.trainable_parameters()``.
    Optional methods: :class:`Evaluates`, :class:`SavesModel`.
    """

    def step(self, records: list[Record]) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Evaluates(Protocol):
    """Optional: ``evaluate(records)`` on held-out records, metrics named ``eval/<name>``; the
    pipeline calls it at the start, every ``run.eval_every`` steps and at the end."""

    def evaluate(self, records: list[Record]) -> dict[str, float]: ...


@runtime_checkable
class SavesModel(Protocol):
    """Optional: an algorithm that trains something other than the policy (a reward model) saves
    that to ``run_dir/final`` instead of the policy."""

    def save_pretrained(self, path: str | Path) -> None: ...


def sft_response(record: Record) -> str:
    """The response an SFT record supervises: ``response``, else the first reference answer."""
    if record.response is not None:
        return record.response
    if record.references:
        return record.references[0]
    raise DataError(
        f"record of kind {record.kind!r} (prompt {record.prompt[:60]!r}) has no response to train on; "
        "SFT needs records with a response or references (for the demo task: data.kind=sft)"
    )


def preference_pairs(records: Sequence[Record], *, all_pairs: bool, algo: str) -> tuple[list[str], list[str], list[str]]:
    """``(prompts, chosen, rejected)`` from preference and ranked records.

    A ranked record (best first) gives every ordered pair ``(better, worse)`` with ``all_pairs``
    (reward-model training, as InstructGPT uses all K-choose-2 comparisons), else its best answer
    against each other one. Any other kind raises a :class:`DataError` naming ``algo``.
    """
    prompts: list[str] = []
    chosen: list[str] = []
    rejected: list[str] = []
    for r in records:
        if r.kind == "preference" and r.chosen is not None and r.rejected is not None:
            pairs = [(r.chosen, r.rejected)]
        elif r.kind == "ranked" and r.responses is not None and len(r.responses) >= 2:
            rs = r.responses
            pairs = [(rs[i], rs[j]) for i in range(len(rs) if all_pairs else 1) for j in range(i + 1, len(rs))]
        else:
            raise DataError(
                f"{algo} needs preference records (prompt, chosen, rejected) or ranked ones with at least two answers; "
                f"got a record of kind {r.kind!r} (prompt {r.prompt[:60]!r}); for the demo task set data.kind=preference"
            )
        for c, rej in pairs:
            prompts.append(r.prompt)
            chosen.append(c)
            rejected.append(rej)
    return prompts, chosen, rejected
