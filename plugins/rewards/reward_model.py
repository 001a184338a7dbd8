"""A learned reward model as a reward (``+reward=reward_model reward.path=/models/my-rm``).

Loads any Hugging Face sequence-classification model with one output (a Bradley-Terry reward
model, as trained by alignfw's reward-model algorithm, TRL's ``RewardTrainer`` or OpenRLHF) from
a local directory through safetensors, and scores ``prompt + response`` with it. The score is the
single logit, optionally shifted and scaled so that rewards of different models are comparable.
The text is read as :meth:`alignfw.models.ClassifierTokenizer.encode` describes (Hugging Face's
tokenizer call; alignfw's Rust tokenizer gives the same ids when the family is supported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from alignfw.checkpoint import check_safetensors
from alignfw.config import option
from alignfw.exceptions import ConfigError
from alignfw.hookspecs import hookimpl
from alignfw.models import load_classifier, score_sequences
from alignfw.registry import BuildContext
from alignfw.types import Record

__all__ = ["RewardModelConfig", "RewardModel"]


@dataclass
class RewardModelConfig:
    """Options of a learned reward model."""

    path: str = "???"  #: a directory with a sequence-classification model (config.json + safetensors)
    batch_size: int = option(32, ge=1)
    max_length: int = option(1024, ge=1)  #: prompt + response tokens scored (longer inputs are truncated on the left)
    shift: float = 0.0  #: subtracted from the raw score
    scale: float = 1.0  #: the shifted score is multiplied by this
    dtype: str = "auto"
    #: encode with alignfw's Rust tokenizer when the tokenizer's family is supported (same ids as Hugging Face's)
    fast_tokenizer: bool = True


class RewardModel:
    """Scores each ``prompt + response`` with a sequence-classification model's single logit."""

    def __init__(self, cfg: RewardModelConfig, ctx: BuildContext | None = None) -> None:
        if cfg.path == "???":
            raise ConfigError("reward=reward_model needs reward.path=<directory of a sequence-classification reward model>")
        device = torch.device(ctx.device if ctx is not None and ctx.device is not None else "cpu")
        if Path(cfg.path).is_dir():  # a damaged weights file is named here, not deep inside transformers
            check_safetensors(sorted(Path(cfg.path).glob("*.safetensors")), f"retrain or re-save the reward model in reward.path={cfg.path!r}")
        self.model, self.tokenizer = load_classifier(cfg.path, dtype=cfg.dtype, device=device, fast_tokenizer=cfg.fast_tokenizer)
        self.cfg = cfg

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> torch.Tensor:
        n = self.cfg.batch_size
        out = [
            score_sequences(self.model, self.tokenizer, prompts[i : i + n], responses[i : i + n], max_length=self.cfg.max_length)
            for i in range(0, len(prompts), n)
        ]
        scores = torch.cat(out) if out else torch.zeros(0)
        return (scores - self.cfg.shift) * self.cfg.scale


@hookimpl
def register_rewards(register):
    register("reward_model", RewardModel, config=RewardModelConfig)
