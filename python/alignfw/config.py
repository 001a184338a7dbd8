"""Typed schema of the top-level config, option ranges, and the one place where ``DictConfig`` becomes objects.

``conf/config.yaml`` extends :class:`AlignfwConfig` (stored as ``alignfw_schema``), so a typo in a
top-level key (``run.stpes=3``) is rejected by Hydra before anything runs. The plugin nodes
(``model``, ``data``, ``reward``, ``algo``) are each plugin's own config dataclass, stored in the
ConfigStore by :func:`alignfw._hydra.register_plugin_configs`.

Hydra checks types; ranges are declared once per field with :func:`option` (the same helper a
third-party plugin uses) and :func:`validate_options` checks the whole typed config right after
composition, before any model loads::

    @dataclass
    class MyConfig:
        steps: int = option(10, ge=1, doc="optimisation steps")
        mode: str = option("fast", choices=("fast", "exact"))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

__all__ = [
    "AlignfwConfig",
    "DistributedConfig",
    "NAME_KEY",
    "OptionRange",
    "RolloutConfig",
    "RunConfig",
    "option",
    "option_range",
    "validate_options",
]

#: key under which each plugin node records the registered name it was composed from
NAME_KEY = "_name_"
#: key of a field's metadata that holds its :class:`OptionRange`
RANGE_KEY = "alignfw_range"


@dataclass(frozen=True)
class OptionRange:
    """The valid values of one option: bounds (``ge``/``gt``/``le``/``lt``) for numbers, or ``choices``.

    ``None`` is always accepted for an option whose type allows it (``int | None``): the range
    constrains the values that are given.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        """``>= 1``, ``> 0 and <= 1``, ``one of 'token', 'sequence'``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = [f"{op} {_num(b)}" for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)) if b is not None]
        return " and ".join(parts)

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def option(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | list[Any] | None = None,
    doc: str | None = None,
) -> Any:
    """A dataclass field with its valid range, for alignfw's configs and plugins' alike.

    Args:
        default: The default value (or ``default_factory`` for a mutable one).
        ge, gt, le, lt: Bounds of a number (``>=``, ``>``, ``<=``, ``<``); any subset.
        choices: The allowed values (strings, usually) instead of bounds.
        doc: One line shown by ``python -m alignfw plugins``.

    Returns:
        A ``dataclasses.field`` whose metadata holds an :class:`OptionRange` (and ``doc``).

    Example::

        @dataclass
        class ToxicityConfig:
            threshold: float = option(0.5, ge=0, le=1, doc="score above which a response counts as toxic")
    """
    if choices is not None and any(b is not None for b in (ge, gt, le, lt)):
        raise TypeError("option(): give bounds (ge/gt/le/lt) or choices, not both")
    metadata: dict[str, Any] = {}
    if choices is not None or any(b is not None for b in (ge, gt, le, lt)):
        metadata[RANGE_KEY] = OptionRange(ge, gt, le, lt, tuple(choices) if choices is not None else None)
    if doc:
        metadata["doc"] = doc
    return field(default=default, default_factory=default_factory, metadata=metadata)


def option_range(f: dataclasses.Field) -> OptionRange | None:
    """The range declared for a dataclass field with :func:`option`, if any."""
    return f.metadata.get(RANGE_KEY)


def _problems(obj: Any, prefix: str) -> Iterator[str]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name, None)
        key = prefix + f.name
        rng = option_range(f)
        if rng is not None and value is not None:
            items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
            for i, v in items:
                if not rng.contains(v):
                    k = key if i is None else f"{key}[{i}]"
                    what = "is not a valid choice" if rng.choices is not None else "is out of range"
                    yield f"{k}={v!r} {what}: must be {rng.describe()}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _problems(value, key + ".")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if dataclasses.is_dataclass(v) and not isinstance(v, type):
                    yield from _problems(v, f"{key}[{i}].")


def validate_options(cfg: Any, prefix: str = "") -> None:
    """Check every option declared with :func:`option` in ``cfg`` and the dataclasses it holds.

    Args:
        cfg: A typed config (``AlignfwConfig`` with its plugin nodes, or one plugin's config).
        prefix: Prepended to each key in messages (``"reward."`` for one plugin's config).

    Raises:
        ConfigError: One or more options are out of range; the message names each key, its value
            and its range (``run.steps=-3 is out of range: must be >= 1``).
    """
    problems = list(_problems(cfg, prefix))
    if problems:
        from alignfw.exceptions import ConfigError

        raise ConfigError("; ".join(problems))


@dataclass
class RunConfig:
    """How long to train, how often to evaluate and save, where outputs go."""

    steps: int = option(120, ge=1)  #: optimisation steps (one batch of prompts or records each)
    #: records (prompts) per step, over all processes (each of N ranks takes batch_size / N)
    batch_size: int = option(64, ge=1)
    eval_every: int = option(40, ge=0)  #: evaluate on held-out prompts every N steps (0: only at start and end)
    eval_size: int = option(128, ge=0)  #: held-out records used per evaluation
    save_every: int = option(0, ge=0)  #: write a checkpoint every N steps (0: only the final model)
    keep_checkpoints: int = option(2, ge=0)  #: newest checkpoints kept on disk (0: all)
    resume: str | None = None  #: a run directory or checkpoint directory to continue from
    output_dir: str | None = None  #: defaults to Hydra's run directory
    #: write into an output directory that holds another run (its outputs are deleted first)
    overwrite: bool = False
    progress: bool = True  #: console progress bar
    #: a held-out metric (eval/reward, eval/perplexity, ...): the model of its best evaluation is kept in best/
    keep_best: str | None = None
    best_mode: str = option("auto", choices=("auto", "max", "min"))  #: auto: min for loss, nll, perplexity and kl metrics; max otherwise
    #: experiment trackers, any of tensorboard, wandb, mlflow, trackio (metrics.jsonl is always written)
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    samples: int = option(4, ge=0)  #: held-out prompts whose completions are logged at every evaluation (samples.jsonl, trackers)
    project: str = "alignfw"  #: the project (wandb, trackio) or experiment (MLflow) runs are logged to


@dataclass
class RolloutConfig:
    """Sampling settings of online algorithms (PPO, GRPO, RLOO, REINFORCE) and of evaluation."""

    max_new_tokens: int = option(16, ge=1)
    #: sampling temperature of training rollouts; > 0, as log-probs are scored at it (greedy: eval_temperature=0)
    temperature: float = option(1.0, gt=0)
    top_k: int = option(0, ge=0)  #: 0: no top-k filtering
    top_p: float = option(1.0, gt=0, le=1)
    #: None: evaluate with ``temperature`` (the policy as trained); 0: greedy
    eval_temperature: float | None = option(None, ge=0)
    #: strings that end a response like a stop token (the text a reward reads ends before them)
    stop_strings: list[str] = field(default_factory=list)
    #: what samples: hf (the policy's generate), vllm, vllm_server, or a plugin's engine; its options
    #: are rollout.engine.<field> (docs/engines.md). None: hf
    engine: Any = None


@dataclass
class DistributedConfig:
    """Options of the multi-process path; they only matter under torchrun (``WORLD_SIZE > 1``)."""

    #: ddp (replicated model, all-reduced gradients) or fsdp2 (sharded, fully_shard)
    strategy: str = option("ddp", choices=("ddp", "fsdp2"))
    backend: str = option("auto", choices=("auto", "nccl", "gloo"))  #: auto (nccl on CUDA, gloo on CPU), nccl or gloo
    timeout_s: int = option(600, ge=1)  #: a collective that waits longer than this fails instead of hanging


@dataclass
class AlignfwConfig:
    seed: int = option(0, ge=0)
    device: str = "auto"  #: "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    #: torch CPU threads; None: 1 for models under 10M parameters on CPU (their kernels are too small
    #: to split, and spinning threads stall on a busy machine), torch's default otherwise
    threads: int | None = option(None, ge=1)
    run: RunConfig = field(default_factory=RunConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    #: multi-process options (torchrun); ignored in a single process
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    model: Any = None
    data: Any = None
    reward: Any = None
    algo: Any = None
