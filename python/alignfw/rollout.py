"""The rollout: sample responses to prompts with the policy, score them with the reward, and the
no-gradient log-prob passes an online algorithm starts from.

Every online algorithm (PPO, GRPO, RLOO, REINFORCE, and third-party ones) and the evaluation of
a policy call :func:`rollout`; the numbers they make of it live in :mod:`alignfw.objectives`.

Notation: ``B`` prompt records, ``G`` samples per prompt (``group_size``), ``b = B * G`` samples,
the ``G`` samples of a prompt contiguous; ``R`` response tokens (padded).

Sampling is seeded per sample: inside :func:`sampling_stream` (the pipeline opens one around each
step and each evaluation) the ``j``-th sample of the ``i``-th record samples from the stream
``mix(run seed, step, draw, global index of the record, j)``. Under torchrun rank ``r`` holds the
records from global index ``offset``, so N processes draw the very samples one process draws, and a
resumed run draws what the uninterrupted one did. Outside a stream (an algorithm's ``step`` called
directly) the seeds come from torch's global generator: random, and reproducible under
``torch.manual_seed``.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch

from alignfw.config import RolloutConfig
from alignfw.engines import engine_for
from alignfw.exceptions import ConfigError, TrainingError
from alignfw.models.chat import render_records
from alignfw.models.sampling import mix
from alignfw.types import Record

if TYPE_CHECKING:
    from alignfw.models import Generation, PolicyModel
    from alignfw.registry import BuildContext

__all__ = ["EVAL_STREAM", "Rollout", "compute_rewards", "record_seeds", "require_reward", "row_seeds", "rollout", "sampling_stream", "score_rollout"]

#: the ``stream`` of evaluations: every evaluation of a run samples with the same seeds, so the
#: start and final figures differ by the policy, not by the luck of the draw
EVAL_STREAM = -1


@dataclass
class _Stream:
    seed: int
    stream: int
    offset: int
    draws: int = 0


_STREAM: ContextVar[_Stream | None] = ContextVar("alignfw_sampling_stream", default=None)


@contextmanager
def sampling_stream(seed: int, stream: int, offset: int = 0) -> Iterator[None]:
    """Within the block, the records passed to :func:`rollout` (or :func:`record_seeds`) are the
    global records ``offset, offset + 1, ...`` of ``stream`` (a step number, or :data:`EVAL_STREAM`);
    each call is a new draw (an algorithm that rolls out twice in a step gets fresh samples)."""
    token = _STREAM.set(_Stream(seed, stream, offset))
    try:
        yield
    finally:
        _STREAM.reset(token)


def record_seeds(n: int) -> list[int]:
    """One sampling seed for each of ``n`` records (see the module's docstring)."""
    key = _STREAM.get()
    if key is None:
        base = int(torch.randint(0, 2**62, (1,)).item())
        return [mix(base, i) for i in range(n)]
    key.draws += 1
    return [mix(key.seed, key.stream, key.draws - 1, key.offset + i) for i in range(n)]


def require_reward(ctx: BuildContext, algo: str) -> Callable[..., Any]:
    """The run's reward; an online algorithm without one stops here with the installed names."""
    if ctx.reward is None:
        names = ", ".join(ctx.registry.names("reward"))
        raise ConfigError(f"{algo} needs a reward: add +reward=<name> (installed: {names})")
    return ctx.reward


def compute_rewards(
    reward_fn: Callable[..., Any], prompts: list[str], responses: list[str], records: Sequence[Record], device: torch.device
) -> torch.Tensor:
    """Call a reward (plugin object or plain callable) and return a finite float32 ``(b,)`` tensor.

    A NaN or infinite score stops training with a message naming the rows, instead of silently
    poisoning the advantages.
    """
    out = reward_fn(prompts, responses, records)
    scores = torch.as_tensor(out if isinstance(out, torch.Tensor) else list(out), dtype=torch.float32).to(device)
    if scores.dim() != 1 or scores.shape[0] != len(prompts):
        raise TrainingError(
            f"the reward returned shape {tuple(scores.shape)} for {len(prompts)} responses; a reward must return one "
            "score per response (a list of floats or a 1-D tensor)"
        )
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise TrainingError(
            f"the reward returned {scores[i].item()} for {len(bad)} of {len(prompts)} responses (first: index {i}, "
            f"prompt {prompts[i][:60]!r}, response {responses[i][:60]!r}); fix the reward so that it returns finite "
            "numbers (e.g. guard divisions by zero)"
        )
    return scores


def row_seeds(seeds: Sequence[int], group_size: int) -> list[int]:
    """The seeds of the ``group_size`` samples of each record (contiguous): ``mix(seed, j)``."""
    return [mix(s, j) for s in seeds for j in range(group_size)]


@dataclass
class Rollout:
    """Scored samples of the policy.

    ``records`` and ``prompts`` have one entry per sample (each prompt record repeated
    ``group_size`` times, contiguous). Shapes: ``scores`` ``(b,)``; ``mask`` ``(b, R)`` float, 1 on
    the response tokens up to and including the first EOS (``gen.response_mask``).
    """

    records: list[Record]
    prompts: list[str]
    gen: Generation
    scores: torch.Tensor
    mask: torch.Tensor
    group_size: int = 1
    #: ``(b, R)`` the engine's log-probs of the sampled tokens (None: the ``hf`` engine, which is the trainer)
    engine_logprobs: torch.Tensor | None = None

    @property
    def responses(self) -> list[str]:
        return self.gen.responses

    @property
    def lengths(self) -> torch.Tensor:
        """Response tokens of each sample, ``(b,)``."""
        return self.mask.sum(1)


def rollout(
    model: PolicyModel,
    reward: Callable[..., Any],
    records: Sequence[Record],
    cfg: RolloutConfig,
    *,
    group_size: int = 1,
    temperature: float | None = None,
    seeds: Sequence[int] | None = None,
) -> Rollout:
    """Sample ``group_size`` responses per record with the policy and score each with ``reward``.

    ``temperature``: the sampling temperature (default ``cfg.temperature``; evaluation passes its own).
    ``seeds``: one per record (default :func:`record_seeds`); sample ``j`` of a record samples with
    ``mix(seed, j)``.
    Conversational records are rendered with the model's chat template first (generation prompt
    added); the reward then gets the rendered prompts, the decoded responses, and the records,
    whose ``conversation`` holds the messages.
    """
    records = render_records(records, model.tokenizer)  # conversations: the chat template (no-op when rendered)
    group = [rec for rec in records for _ in range(group_size)]  # each record G times, contiguous
    prompts = [rec.prompt for rec in group]
    temp = cfg.temperature if temperature is None else temperature
    seeds = record_seeds(len(records)) if seeds is None else seeds
    engine = engine_for(model, cfg)  # rollout.engine: the policy's generate (hf), vLLM, ...
    engine.wake()
    engine.sync_weights(model)  # the optimizer changed the policy since the last rollout
    gen = engine.generate(
        prompts,
        max_new_tokens=cfg.max_new_tokens,
        temperature=temp,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        stop_strings=cfg.stop_strings,
        seeds=row_seeds(seeds, group_size),
    )
    engine.sleep()
    scores = compute_rewards(reward, prompts, gen.responses, group, model.device)  # (b,)
    return Rollout(group, prompts, gen, scores, gen.response_mask.float(), group_size, getattr(gen, "logprobs", None))


@torch.no_grad()
def score_rollout(
    model: PolicyModel, gen: Generation, *, temperature: float, ref: Any = None, policy: bool = True, values: bool = False
) -> dict[str, torch.Tensor]:
    """The no-gradient passes before an update, in eval mode: the sampling policy's ``logprobs``
    (when ``policy``), its ``values`` (when ``values``: needs a value head) and the reference's
    ``ref_logprobs`` (when ``ref`` is given), each float32 ``(b, R)`` and 0 where masked."""
    model.lm.eval()
    out: dict[str, torch.Tensor] = {}
    if policy or values:
        pol = model.score(gen, temperature=temperature, values=values)
        if policy:
            out["logprobs"] = pol["logprobs"].float()
        if values:
            out["values"] = pol["values"].float()
    if ref is not None:
        out["ref_logprobs"] = model.score(gen, temperature=temperature, lm=ref)["logprobs"].float()
    return out
