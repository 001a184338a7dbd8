"""The training pipeline: build the components from a typed config, then run one loop.

    data source ──► batch of records ──► algorithm.step(records) ──► metrics ──► hooks
                                                                        └─► eval, checkpoints

Offline algorithms get records with responses; online ones get prompt records and roll out
themselves, so one loop serves both. Batches are a pure function of ``(seed, step)`` (a seeded
permutation per epoch), which makes ``run.resume`` continue exactly where the run stopped.

Under torchrun (``alignfw.distributed``) every rank builds the same components, takes its
contiguous share of each step's batch (``run.batch_size`` stays the global batch), and the
metrics and evaluations are averaged over ranks; only rank 0 writes the run directory and calls
the lifecycle hooks. With one process all of that is the identity.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from alignfw import distributed
from alignfw.checkpoint import check_safetensors, encode_state, find_checkpoint, load_state, save_checkpoint, share_files
from alignfw.config import NAME_KEY, AlignfwConfig, validate_options
from alignfw.exceptions import AlignfwError, CheckpointError, ConfigError, DataError, PluginError, TrainingError
from alignfw.models import PolicyModel
from alignfw.models.chat import render_records
from alignfw.models.protocol import missing_members
from alignfw.registry import BuildContext, GuardedReward, get_plugin_manager, get_registry
from alignfw.rundir import Interrupted, StopSignals, check_run_dir, claim_run_dir, release_run_dir
from alignfw.types import Evaluates, Record, SavesModel

__all__ = ["Trainer", "batch_for_step", "resolve_device", "run"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or device=auto")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def batch_for_step(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the records of ``step``: consecutive slices of a seeded permutation per epoch."""
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        take = min(batch_size - len(out), n - offset)
        out += perm[offset : offset + take]
        pos += take
    return out


def _name(node: Any) -> str | None:
    return None if node is None else getattr(node, NAME_KEY, None)


class Trainer:
    """Builds the components of a run and drives the loop."""

    def __init__(self, cfg: AlignfwConfig, run_dir: Path, resolved: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.resolved = resolved or {}
        self.registry = get_registry()
        self.pm = get_plugin_manager()
        if cfg.algo is None:
            raise ConfigError(f"choose an algorithm with +algo=<name> (installed: {', '.join(self.registry.names('algorithm'))})")
        if cfg.model is None or cfg.data is None:
            raise ConfigError("the config has no model or data; select them with model=<name> data=<name>")
        validate_options(cfg)  # every declared option range, before anything loads
        seed_everything(cfg.seed)  # the same on every rank: components are built identically
        self.device = distributed.init(cfg.distributed, resolve_device(cfg.device))
        self.world = distributed.world_size()
        if cfg.run.batch_size % self.world:
            raise ConfigError(
                f"run.batch_size={cfg.run.batch_size} is the global batch and must be divisible by the {self.world} processes; "
                f"use a multiple of {self.world} or change --nproc_per_node"
            )
        self.run_dir = run_dir = Path(distributed.broadcast_object(str(run_dir)))  # Hydra's timestamps may differ per rank
        if distributed.is_main():  # refuse another run's directory before any model loads
            check_run_dir(run_dir, resume=cfg.run.resume, overwrite=cfg.run.overwrite)
        ctx = BuildContext(
            self.registry, self.device, str(run_dir), cfg.seed, run=cfg.run, rollout=cfg.rollout, distributed=cfg.distributed
        )
        self.data = self.registry.get("data", _name(cfg.data)).build(cfg.data, ctx)
        ctx.data = self.data
        self.model: PolicyModel = self.registry.get("model", _name(cfg.model)).build(cfg.model, ctx)
        missing = missing_members(self.model)
        if missing:
            raise PluginError(
                f"model {_name(cfg.model)!r} returned a {type(self.model).__name__}, which lacks {', '.join(missing)} "
                "of alignfw.models.PolicyModel; its factory must return an object with every member of that protocol"
            )
        ctx.model = self.model
        _set_threads(cfg.threads, self.device, self.model)
        if cfg.reward is not None:
            reward_reg = self.registry.get("reward", _name(cfg.reward))
            self.reward = GuardedReward(reward_reg.build(cfg.reward, ctx), reward_reg)  # names the plugin when it fails
            ctx.reward = self.reward
        else:
            self.reward = None
        self.algo = self.registry.get("algorithm", _name(cfg.algo)).build(cfg.algo, ctx)
        if self.world > 1:  # after building: each rank samples its own stream from here on
            seed_everything(cfg.seed * 1_000_003 + 7919 * (distributed.rank() + 1))
        self.train_records = self._records("train")
        self.eval_records = self._records("eval")[: cfg.run.eval_size] if cfg.run.eval_size > 0 else []
        self.step = 0

    def _records(self, split: str) -> list[Record]:
        recs = render_records(self.data.records(split), self.model.tokenizer)  # conversations through the chat template
        if split == "train" and not recs:
            raise DataError(f"the data source {_name(self.cfg.data)!r} has no training records; check data.path and its filters")
        return recs

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Step, algorithm state and RNG; under torchrun also every rank's RNG (``rng_ranks``), so a
        collective: every rank must call it."""
        rng = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}
        state = {"step": self.step, "algo": self.algo.state_dict(), "rng": rng, **self._origin()}
        if self.model.grad_scaler is not None:  # fp16: the loss scale continues where it was
            state["grad_scaler"] = self.model.grad_scaler.state_dict()
        if self.world > 1:
            state["world_size"] = self.world
            state["rng_ranks"] = distributed.gather_objects(rng)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.algo.load_state_dict(state["algo"])
        if self.model.grad_scaler is not None and "grad_scaler" in state:
            self.model.grad_scaler.load_state_dict(state["grad_scaler"])
        optimizer = getattr(self.algo, "optimizer", None)
        if optimizer is not None and self.model.fsdp:
            distributed.shard_optimizer_state(optimizer)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world:
            raise ConfigError(
                f"the checkpoint was written by {saved_world} process(es) and this run has {self.world}; resume with "
                f"--nproc_per_node={saved_world} (each rank's random stream is in the checkpoint, so the run continues exactly)"
            )
        rng = state["rng_ranks"][distributed.rank()] if self.world > 1 else state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate((3, tuple(rng["python"]), rng["python_pos"]))

    def _origin(self) -> dict[str, Any]:
        """What a checkpoint records about the run that wrote it."""
        return {"algorithm": _name(self.cfg.algo), "model": _name(self.cfg.model), "model_path": getattr(self.cfg.model, "path", None)}

    def _check_origin(self, ck: Path, state: dict[str, Any]) -> None:
        """Refuse a checkpoint of another algorithm or model plugin; warn about another model.path."""
        mine = self._origin()
        for key, how in (("algorithm", "+algo={}"), ("model", "model={}")):
            saved = state.get(key)
            if saved is not None and saved != mine[key]:
                raise CheckpointError(
                    f"checkpoint {ck} was written by {key} {saved!r} and this run uses {mine[key]!r}; resume it with "
                    f"{how.format(saved)}, or start a new run without run.resume"
                )
        saved_path = state.get("model_path")
        if saved_path is not None and saved_path != mine["model_path"] and distributed.is_main():
            print(f"alignfw: warning: checkpoint {ck} was trained from model.path={saved_path!r}, this run names {mine['model_path']!r}", file=sys.stderr)

    def resume(self, path: str) -> None:
        from safetensors.torch import load_file

        ck = find_checkpoint(path)
        # the policy's weights, or only its adapter's for a LoRA policy (the base comes from model.path)
        weights = next((f for f in (ck / "model" / n for n in ("model.safetensors", "adapter_model.safetensors")) if f.exists()), None)
        if weights is None:
            raise CheckpointError(f"checkpoint {ck} has no model/model.safetensors (nor a LoRA adapter); resume from another checkpoint")
        state = load_state(ck)  # first: it says which algorithm and model wrote the checkpoint
        self._check_origin(ck, state)
        check_safetensors([weights], "the checkpoint is damaged: resume from an earlier one (checkpoints/step_*)")
        weights_sd = load_file(str(weights))
        missing, unexpected = self.model.load_policy_state_dict(weights_sd)
        tied = {k for k in missing if "lm_head" in k}  # tied embeddings are saved once
        if set(missing) - tied or unexpected:
            raise CheckpointError(f"checkpoint {ck} does not match model {_name(self.cfg.model)!r} (missing {sorted(missing)[:3]}, unexpected {unexpected[:3]})")
        try:
            self.load_state_dict(state)
        except AlignfwError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:  # e.g. torch's optimizer "groups mismatch"
            raise CheckpointError(
                f"checkpoint {ck} does not fit this run's algorithm {_name(self.cfg.algo)!r} ({type(e).__name__}: {e}); "
                "resume it with the algorithm options it was written with, or start a new run"
            ) from e
        if distributed.is_main():
            print(f"resumed from {ck} at step {self.step}", file=sys.stderr)

    # -- the loop -----------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """The algorithm's evaluation on the held-out records; under torchrun each rank evaluates its
        share and the results are averaged weighted by record count."""
        if not self.eval_records or not isinstance(self.algo, Evaluates):
            return {}
        if self.world == 1:
            return self.algo.evaluate(self.eval_records)
        mine = distributed.shard(self.eval_records)
        return distributed.weighted_mean_metrics(self.algo.evaluate(mine) if mine else {}, float(len(mine)))

    def train(self) -> dict[str, Any]:
        """Claim the run directory (a lock; released at the end), then train. SIGINT / SIGTERM stop
        at the next step boundary with a checkpoint (:class:`alignfw.rundir.Interrupted`)."""
        cfg = self.cfg
        lock = claim_run_dir(self.run_dir, resume=cfg.run.resume, overwrite=cfg.run.overwrite) if distributed.is_main() else None
        try:
            with StopSignals() as stop:
                return self._train(stop)
        finally:
            release_run_dir(lock)

    def _stop_requested(self, stop: StopSignals) -> int | None:
        """The signal that asked to stop, agreed by every rank (a collective under torchrun, so all
        ranks stop after the same step)."""
        if self.world == 1:
            return stop.signum
        seen = torch.tensor([float(stop.signum == s) for s in (signal.SIGTERM, signal.SIGINT)], dtype=torch.float64)
        seen = distributed.all_reduce_sum(seen)  # ranks that got SIGTERM, ranks that got SIGINT
        return signal.SIGTERM if seen[0] > 0 else signal.SIGINT if seen[1] > 0 else None

    def _interrupt(self, signum: int, bar: Any) -> Interrupted:
        if bar is not None:
            bar.close()
        every = self.cfg.run.save_every
        path = None
        if every and self.step % every:
            path = self.checkpoint()
        elif every and distributed.is_main():
            path = find_checkpoint(self.run_dir) if (self.run_dir / "checkpoints" / "latest").exists() else None
        return Interrupted(signum, self.step, self.cfg.run.steps, path, self.run_dir)

    def _train(self, stop: StopSignals) -> dict[str, Any]:
        cfg = self.cfg
        main = distributed.is_main()
        if main:
            (self.run_dir / "config.yaml").write_text(_yaml(self.resolved))
        if cfg.run.resume:
            self.resume(cfg.run.resume)
        if main:
            self.pm.hook.on_run_start(run_dir=str(self.run_dir), config=self.resolved)
        first = self.evaluate() if self.step == 0 else {}
        if first:
            self._log(0, first)
            if main:
                _print_eval("start", first)
        bar = _progress(cfg.run.steps, self.step, cfg.run.progress and main)
        t0 = time.perf_counter()
        last_eval: dict[str, float] = first
        while self.step < cfg.run.steps:
            idx = batch_for_step(len(self.train_records), cfg.run.batch_size, self.step, cfg.seed)
            if self.world > 1:
                idx = distributed.shard(idx)  # this rank's contiguous share; GRPO/RLOO groups form on one rank
            metrics = self.algo.step([self.train_records[i] for i in idx])
            metrics.update(self.model.take_stats())  # truncation counters of this step's encoding
            metrics = distributed.mean_metrics(metrics)
            bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise TrainingError(
                    f"step {self.step + 1}: {', '.join(bad)} became {metrics[bad[0]]}; lower algo.lr, check the reward's "
                    "scale, or resume from the last checkpoint with run.resume"
                )
            self.step += 1
            metrics["time/elapsed_s"] = time.perf_counter() - t0
            if cfg.run.eval_every and self.step % cfg.run.eval_every == 0 and self.step < cfg.run.steps:
                last_eval = self.evaluate()
                metrics.update(last_eval)
            self._log(self.step, metrics)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({short: f"{metrics[k]:.3f}" for k, short in _POSTFIX.items() if k in metrics})
            if cfg.run.save_every and self.step % cfg.run.save_every == 0:
                self.checkpoint()
            signum = self._stop_requested(stop) if self.step < cfg.run.steps else None
            if signum is not None:
                raise self._interrupt(signum, bar)
        if bar is not None:
            bar.close()
        final = self.evaluate()
        if final:
            self._log(self.step, final)
            last_eval = final
        if cfg.run.save_every and self.step % cfg.run.save_every:
            self.checkpoint()
        # an algorithm that trains something other than the policy (a reward model) saves that instead
        save = self.algo.save_pretrained if isinstance(self.algo, SavesModel) else self.model.save_pretrained
        if main or self.model.fsdp:  # FSDP2 gathers the shards on every rank; rank 0 writes
            save(str(self.run_dir / "final"))
            if main:
                share_files(self.run_dir / "final")
        summary = {"steps": self.step, "start": first, "final": last_eval, "run_dir": str(self.run_dir)}
        if main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if first and final and main:
            _print_eval("final", final)
            _print_change(first, final)
        if main:
            print(f"outputs: {self.run_dir} (final model in {self.run_dir / 'final'})")
            self.pm.hook.on_run_end(run_dir=str(self.run_dir), metrics=last_eval)
        distributed.barrier()
        return summary

    def checkpoint(self) -> Path | None:
        """Write a checkpoint; returns its path on rank 0 (None on the others). Under torchrun every
        rank must call it: the state holds every rank's RNG, and FSDP2 gathers full tensors."""
        encoded = encode_state(self.state_dict())  # collective under FSDP2 (DTensors become full tensors)
        model: Any = self.model
        if getattr(self.model, "lora", None) is not None:  # a LoRA checkpoint holds the adapter, never a merged copy
            model = SimpleNamespace(save_pretrained=partial(self.model.save_pretrained, merge=False))
        if self.model.fsdp:  # gather on every rank now; rank 0 writes the result below
            model = SimpleNamespace(save_pretrained=partial(self.model.save_pretrained, state_dict=self.model.policy_state_dict()["lm"]))
        path = None
        if distributed.is_main():
            path = save_checkpoint(self.run_dir, self.step, model, encoded, keep=self.cfg.run.keep_checkpoints)
            self.pm.hook.on_checkpoint(step=self.step, path=str(path))
        distributed.barrier()  # no rank moves on (or resumes) before the checkpoint is complete
        return path

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        if distributed.is_main():
            self.pm.hook.on_step_end(step=step, metrics=metrics)


_POSTFIX = {"reward/mean": "reward", "kl/seq": "kl", "loss/total": "loss"}


def run(cfg: AlignfwConfig, run_dir: Path, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build and train; returns the summary (start and final evaluation). Under torchrun this joins
    the process group first and leaves it at the end."""
    summary = Trainer(cfg, run_dir, resolved).train()
    # on an error the group is not destroyed: a peer may be blocked in a collective, and leaving
    # (process exit) is what unblocks it; torchrun then stops the remaining ranks
    distributed.shutdown()
    return summary


def _set_threads(threads: int | None, device: torch.device, model: PolicyModel) -> None:
    if threads is not None:  # >= 1: declared in AlignfwConfig and validated
        torch.set_num_threads(threads)
        return
    if device.type == "cpu" and sum(p.numel() for p in model.lm.parameters()) < 10_000_000:
        torch.set_num_threads(1)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)


def _print_eval(label: str, m: dict[str, float]) -> None:
    parts = [f"{k.removeprefix('eval/')} {v:.4f}" for k, v in m.items()]
    print(f"[eval:{label}] " + "  ".join(parts), flush=True)


def _print_change(first: dict[str, float], final: dict[str, float]) -> None:
    a, b = first.get("eval/reward"), final.get("eval/reward")
    if a is not None and b is not None:
        rel = (b - a) / abs(a) * 100 if a else float("inf")
        print(f"held-out reward: {a:.4f} -> {b:.4f} ({rel:+.1f}%)", flush=True)


def _yaml(d: dict[str, Any]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(d)) if d else ""
