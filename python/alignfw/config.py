"""Typed schema of the top-level config, and the one place where ``DictConfig`` becomes objects.

``conf/config.yaml`` extends :class:`AlignfwConfig` (stored as ``alignfw_schema``), so a typo in a
top-level key (``run.stpes=3``) is rejected by Hydra before anything runs. The plugin nodes
(``model``, ``data``, ``reward``, ``algo``) are each plugin's own config dataclass, stored in the
ConfigStore by :func:`alignfw._hydra.register_plugin_configs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AlignfwConfig", "DistributedConfig", "RolloutConfig", "RunConfig", "NAME_KEY"]

#: key under which each plugin node records the registered name it was composed from
NAME_KEY = "_name_"


@dataclass
class RunConfig:
    """How long to train, how often to evaluate and save, where outputs go."""

    steps: int = 120  #: optimisation steps (one batch of prompts or records each)
    batch_size: int = 64  #: records (prompts) per step, over all processes (each of N ranks takes batch_size / N)
    eval_every: int = 40  #: evaluate on held-out prompts every N steps (0: only at start and end)
    eval_size: int = 128  #: held-out records used per evaluation
    save_every: int = 0  #: write a checkpoint every N steps (0: only the final model)
    keep_checkpoints: int = 2  #: newest checkpoints kept on disk
    resume: str | None = None  #: a run directory or checkpoint directory to continue from
    output_dir: str | None = None  #: defaults to Hydra's run directory
    progress: bool = True  #: console progress bar


@dataclass
class RolloutConfig:
    """Sampling settings of online algorithms (PPO, GRPO, RLOO, REINFORCE) and of evaluation."""

    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    eval_temperature: float | None = None  #: None: evaluate with ``temperature`` (the policy as trained)
    #: strings that end a response like a stop token (the text a reward reads ends before them)
    stop_strings: list[str] = field(default_factory=list)
    #: what samples: hf (the policy's generate), vllm, vllm_server, or a plugin's engine; its options
    #: are rollout.engine.<field> (docs/engines.md). None: hf
    engine: Any = None


@dataclass
class DistributedConfig:
    """Options of the multi-process path; they only matter under torchrun (``WORLD_SIZE > 1``)."""

    strategy: str = "ddp"  #: ddp (replicated model, all-reduced gradients) or fsdp2 (sharded, fully_shard)
    backend: str = "auto"  #: auto (nccl on CUDA, gloo on CPU), nccl or gloo
    timeout_s: int = 600  #: a collective that waits longer than this fails instead of hanging


@dataclass
class AlignfwConfig:
    seed: int = 0
    device: str = "auto"  #: "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    #: torch CPU threads; None: 1 for models under 10M parameters on CPU (their kernels are too small
    #: to split, and spinning threads stall on a busy machine), torch's default otherwise
    threads: int | None = None
    run: RunConfig = field(default_factory=RunConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    #: multi-process options (torchrun); ignored in a single process
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    model: Any = None
    data: Any = None
    reward: Any = None
    algo: Any = None
