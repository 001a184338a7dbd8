"""A learned reward model as a reward (``+reward=reward_model reward.path=/models/my-rm``).

Loads any Hugging Face sequence-classification model with one output (a Bradley-Terry reward
model, as trained by alignfw's reward-model algorithm, TRL's ``RewardTrainer`` or OpenRLHF) from
a local directory through safetensors, and scores ``prompt + response`` with it. The score is the
single logit, optionally shifted and scaled so that rewards of different models are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from alignfw.hookspecs import hookimpl
from alignfw.types import Record

__all__ = ["RewardModelConfig", "RewardModel"]


@dataclass
class RewardModelConfig:
    """Options of a learned reward model."""

    path: str = "???"  #: a directory with a sequence-classification model (config.json + safetensors)
    batch_size: int = 32
    max_length: int = 1024  #: prompt + response tokens scored (longer inputs are truncated on the left)
    shift: float = 0.0  #: subtracted from the raw score
    scale: float = 1.0  #: the shifted score is multiplied by this
    dtype: str = "auto"


class RewardModel:
    """Scores each ``prompt + response`` with a sequence-classification model's single logit."""

    def __init__(self, cfg: RewardModelConfig, ctx: Any = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from alignfw.exceptions import ConfigError
        from alignfw.plugins.models.hf import _dtype, resolve_model_path

        device = torch.device(ctx.device if ctx is not None and ctx.device is not None else "cpu")
        path = resolve_model_path(cfg.path) if cfg.path != "???" else None
        if path is None:
            raise ConfigError("reward=reward_model needs reward.path=<directory of a sequence-classification reward model>")
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, dtype=_dtype(cfg.dtype, device))
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"could not load the reward model at reward.path={cfg.path!r}: {e}") from e
        if self.model.config.num_labels != 1:
            raise ConfigError(
                f"reward.path={cfg.path!r} has {self.model.config.num_labels} outputs; a reward model has exactly one (num_labels=1)"
            )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = "left"
        self.tokenizer.padding_side = "right"  # positions of real tokens must not depend on padding
        self.model.to(device).eval().requires_grad_(False)
        self.device, self.cfg = device, cfg

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> torch.Tensor:
        texts = [p + r for p, r in zip(prompts, responses)]
        out = []
        for i in range(0, len(texts), self.cfg.batch_size):
            enc = self.tokenizer(
                texts[i : i + self.cfg.batch_size], return_tensors="pt", padding=True, truncation=True, max_length=self.cfg.max_length
            ).to(self.device)
            out.append(self.model(**enc).logits[:, 0].float())
        scores = torch.cat(out) if out else torch.zeros(0)
        return (scores - self.cfg.shift) * self.cfg.scale


@hookimpl
def register_rewards(register):
    register("reward_model", RewardModel, config=RewardModelConfig)
