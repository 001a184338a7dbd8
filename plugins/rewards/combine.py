"""Weighted fusion of rewards (``+reward=combine``).

    python -m alignfw +algo=ppo +reward=combine \
        'reward.components=[{name: bleu, weight: 1.0}, {name: rule, weight: 0.2, options: {rules: [...]}}]'

Each component is any registered reward, built with its own typed config (``options`` are checked
against that config class: a misspelled option is an error naming the valid ones). Scores are
optionally standardised per batch before weighting so that components of different scales mix
as their weights say. Per-component means are exposed for logging as ``last_components``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from alignfw.hookspecs import hookimpl
from alignfw.registry import BuildContext
from alignfw.types import Record

__all__ = ["CombineConfig", "Component", "CombinedReward"]


@dataclass
class Component:
    name: str = "???"  #: a registered reward name
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  #: that reward's config fields


@dataclass
class CombineConfig:
    """Options of the weighted reward fusion."""

    components: list[Component] = field(default_factory=list)
    standardize: bool = False  #: z-score each component over the batch before weighting


class CombinedReward:
    """Sum of weighted component rewards."""

    def __init__(self, cfg: CombineConfig, ctx: BuildContext) -> None:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        from alignfw.config import validate_options
        from alignfw.exceptions import ConfigError

        if not cfg.components:
            raise ConfigError(
                "reward=combine needs reward.components, e.g. 'reward.components=[{name: bleu, weight: 1.0}]'; "
                f"installed rewards: {', '.join(n for n in ctx.registry.names('reward') if n != 'combine')}"
            )
        self.parts: list[tuple[str, float, Any]] = []
        for comp in cfg.components:
            if comp.name == "combine":
                raise ConfigError("reward.components cannot contain 'combine' itself")
            reg = ctx.registry.get("reward", comp.name)
            try:
                sub = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(reg.config), comp.options or {}))
            except OmegaConfBaseException as e:
                raise ConfigError(f"reward.components: options of {comp.name!r}: {e}".split("\n")[0]) from None
            validate_options(sub, f"reward.components[{len(self.parts)}].options.")
            self.parts.append((comp.name, float(comp.weight), reg.build(sub, ctx)))
        self.standardize = cfg.standardize
        self.last_components: dict[str, float] = {}

    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> torch.Tensor:
        total = torch.zeros(len(prompts))
        for name, weight, fn in self.parts:
            out = fn(prompts, responses, records)
            s = torch.as_tensor(out if isinstance(out, torch.Tensor) else list(out), dtype=torch.float32).cpu()
            self.last_components[name] = s.mean().item()
            if self.standardize and len(s) > 1:
                s = (s - s.mean()) / (s.std() + 1e-8)
            total += weight * s
        return total


@hookimpl
def register_rewards(register):
    register("combine", CombinedReward, config=CombineConfig)
