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
import logging
import math
import random
import shutil
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
from alignfw.evaluation import sample_completions
from alignfw.exceptions import AlignfwError, CheckpointError, ConfigError, DataError, PluginError, TrainingError
from alignfw.models import PolicyModel
from alignfw.models.chat import render_records
from alignfw.models.protocol import missing_members
from alignfw.registry import BuildContext, GuardedReward, get_plugin_manager, get_registry
from alignfw.rollout import EVAL_STREAM, sampling_stream
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
        if cfg.run.keep_best:
            best_is_higher(cfg.run.keep_best, cfg.run.best_mode)  # checks best_mode before anything trains
            if cfg.run.eval_size <= 0 or not self.eval_records or not isinstance(self.algo, Evaluates):
                raise ConfigError(f"run.keep_best={cfg.run.keep_best} needs held-out evaluations: set run.eval_size > 0 with data that has an eval split")
        self.step = 0
        self.best: dict[str, Any] | None = None  #: {"metric", "step", "value"} of the model in best/ (run.keep_best)

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
        state = {"step": self.step, "algo": self.algo.state_dict(), "rng": rng, "best": self.best, **self._origin()}
        if self.model.grad_scaler is not None:  # fp16: the loss scale continues where it was
            state["grad_scaler"] = self.model.grad_scaler.state_dict()
        if self.world > 1:
            state["world_size"] = self.world
            state["rng_ranks"] = distributed.gather_objects(rng)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.best = state.get("best")
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
            log.warning("resumed from %s at step %d", ck, self.step)  # stderr, as before

    # -- the loop -----------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """The algorithm's evaluation on the held-out records; under torchrun each rank evaluates its
        share and the results are averaged weighted by record count."""
        if not self.eval_records or not isinstance(self.algo, Evaluates):
            return {}
        self.samples()
        n, w, r = len(self.eval_records), self.world, distributed.rank()
        with sampling_stream(self.cfg.seed, EVAL_STREAM, offset=r * n // w):  # the offset of distributed.shard's share
            if self.world == 1:
                return self.algo.evaluate(self.eval_records)
            mine = distributed.shard(self.eval_records)
            return distributed.weighted_mean_metrics(self.algo.evaluate(mine) if mine else {}, float(len(mine)))

    def samples(self) -> list[dict[str, Any]]:
        """``run.samples`` completions of the first held-out prompts, handed to the ``on_samples``
        hook (every rank samples the same under the run's seed; rank 0 calls the hook)."""
        if self.cfg.run.samples <= 0 or isinstance(self.algo, SavesModel):  # a reward model's run trains no policy
            return []
        out = sample_completions(self.model, self.reward, self.eval_records[: self.cfg.run.samples], self.cfg.rollout, seed=self.cfg.seed)
        if distributed.is_main():
            self.pm.hook.on_samples(step=self.step, samples=out)
        return out

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
            console_logging()
            (self.run_dir / "config.yaml").write_text(_yaml(self.resolved))
        if cfg.run.resume:
            self.resume(cfg.run.resume)
        if main:
            self.pm.hook.on_run_start(run_dir=str(self.run_dir), config=self.resolved)
        first = self.evaluate() if self.step == 0 else {}
        if first:
            self._log(0, first)
            self._keep_best(first)
            if main:
                _print_eval("start", first)
        bar = _progress(cfg.run.steps, self.step, cfg.run.progress and main)
        t0 = time.perf_counter()
        last_eval: dict[str, float] = first
        tokens = TokenCounter(self.model.lm)
        token_total, step_time = 0.0, 0.0
        while self.step < cfg.run.steps:
            idx = batch_for_step(len(self.train_records), cfg.run.batch_size, self.step, cfg.seed)
            if self.world > 1:
                idx = distributed.shard(idx)  # this rank's contiguous share; GRPO/RLOO groups form on one rank
            tokens.take()  # evaluation's tokens are not the step's
            t_step = time.perf_counter()
            # rollouts sample by (seed, step, global index): N processes draw what one process draws
            with sampling_stream(cfg.seed, self.step, offset=distributed.rank() * len(idx)):
                metrics = self.algo.step([self.train_records[i] for i in idx])
            metrics["time/tokens"] = tokens.take()
            dt = time.perf_counter() - t_step
            metrics.update(self.model.take_stats())  # truncation counters of this step's encoding
            metrics.update(_reward_parts(self.reward))  # reward/<name> of each fused reward
            metrics = distributed.mean_metrics(metrics)
            step_tokens = metrics.pop("time/tokens") * self.world  # over all ranks
            metrics["time/tokens_per_s"] = step_tokens / max(dt, 1e-9)
            token_total, step_time = token_total + step_tokens, step_time + dt
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
                self._keep_best(last_eval)
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
        tokens.close()
        final = self.evaluate()
        if final:
            self._log(self.step, final)
            last_eval = final
            self._keep_best(final)
        if cfg.run.save_every and self.step % cfg.run.save_every:
            self.checkpoint()
        self._save_model("final", last_eval)
        summary = {"steps": self.step, "start": first, "final": last_eval, "run_dir": str(self.run_dir)}
        if self.best is not None:
            summary["best"] = {**self.best, "path": str(self.run_dir / "best")}
        summary["wall_s"] = round(time.perf_counter() - t0, 3)  # the training loop and the final evaluation
        summary["tokens_per_s"] = round(token_total / step_time, 1) if step_time else None
        summary.update(environment(self.device, self.world))
        if main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if first and final and main:
            _print_eval("final", final)
            _print_change(first, final)
        if self.best is not None and main:
            log.info("best model: step %d (%s %.4f) in %s", self.best["step"], self.best["metric"], self.best["value"], self.run_dir / "best")
        if main:
            log.info("outputs: %s (final model in %s)", self.run_dir, self.run_dir / "final")
            self.pm.hook.on_run_end(run_dir=str(self.run_dir), metrics=last_eval)
        distributed.barrier()
        return summary

    def _keep_best(self, evals: dict[str, float]) -> None:
        """After an evaluation: when ``run.keep_best``'s metric improved, save the model to ``best/``."""
        metric = self.cfg.run.keep_best
        if not metric or not evals:
            return
        if metric not in evals:
            raise ConfigError(f"run.keep_best={metric} is not a held-out metric of this run; choose one of: {', '.join(sorted(evals))}")
        value, best = float(evals[metric]), self.best
        higher = best_is_higher(metric, self.cfg.run.best_mode)
        if best is not None and best["metric"] == metric and not (value > best["value"] if higher else value < best["value"]):
            return
        self.best = {"metric": metric, "step": self.step, "value": value}
        self._save_model("best", evals)

    def _save_model(self, name: str, metrics: dict[str, float]) -> Path:
        """The trained model (the policy, or what the algorithm trains instead, e.g. a reward model)
        in ``run_dir/name`` with its model card. It is written to a temporary folder and then
        renamed, so a save cut short never leaves a half model under ``name``. Under FSDP2 every
        rank must call it (the shards are gathered); rank 0 writes."""
        from alignfw import __version__
        from alignfw.model_card import write_model_card

        target, tmp, old = (self.run_dir / n for n in (name, f".{name}.tmp", f".{name}.old"))
        save = self.algo.save_pretrained if isinstance(self.algo, SavesModel) else self.model.save_pretrained
        main = distributed.is_main()
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        distributed.barrier()
        if main or self.model.fsdp:
            save(str(tmp))
        if main:
            share_files(tmp)  # safetensors writes 0600; the outputs are as readable as the run's other files
            lora = (tmp / "adapter_model.safetensors").exists()
            title = f"{self.run_dir.name}/{name}"
            write_model_card(tmp, config=self.resolved, metrics=metrics, step=self.step, title=title, lora=lora, version=__version__)
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()
        return target

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


class TokenCounter:
    """Tokens through the policy's forward passes (sampling, scoring, training): a forward pre-hook
    on ``lm`` adds the attention mask's sum (the whole input without one; one new token per
    sequence in a cached generation step). Kept as a tensor, so counting never syncs the GPU."""

    def __init__(self, lm: torch.nn.Module) -> None:
        self.count: Any = 0
        self.handle = lm.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor):
            return
        mask = kwargs.get("attention_mask")
        same = isinstance(mask, torch.Tensor) and mask.shape == ids.shape  # not a cached step (mask covers the past)
        self.count = self.count + (mask.sum() if same else ids.numel())

    def take(self) -> float:
        """Tokens since the last call."""
        n, self.count = self.count, 0
        return float(n)

    def close(self) -> None:
        self.handle.remove()


def environment(device: torch.device, world: int) -> dict[str, Any]:
    """What produced a run: versions of alignfw, torch and transformers, the git commit of the
    working directory (when it is a git checkout) and the hardware, for ``summary.json``."""
    import os
    import platform
    import subprocess

    import transformers

    from alignfw import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    hardware: dict[str, Any] = {"device": device.type, "processes": world, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        hardware.update(gpu=torch.cuda.get_device_name(device), gpu_count=torch.cuda.device_count())
    versions = {"alignfw": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    return {"versions": versions, "git_commit": commit, "hardware": hardware}


def _reward_parts(reward: Any) -> dict[str, float]:
    """The mean score of each part of a fused reward (``combine``'s ``last_components``, set by its
    last call: this step's rollout) as ``reward/<name>``; emptied once read."""
    parts = getattr(reward, "last_components", None)
    if not isinstance(parts, dict):
        return {}
    out = {f"reward/{k}": float(v) for k, v in parts.items()}
    parts.clear()
    return out


#: the run's console lines (evaluations, the held-out change, where outputs went)
log = logging.getLogger("alignfw.run")


class _Console(logging.StreamHandler):
    """The bare message on ``sys.stdout`` (``sys.stderr`` from WARNING up), whichever stream is
    current when a line is written (pytest and notebooks swap them)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr if getattr(self, "_record_level", 0) >= logging.WARNING else sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass

    def emit(self, record: logging.LogRecord) -> None:
        self._record_level = record.levelno
        super().emit(record)
        self.flush()


def console_logging() -> None:
    """Send :data:`log` to the console as bare lines (what ``print`` wrote before) and to every file
    handler of the root logger: under the command line, Hydra's job log ``<run_dir>/<job>.log``."""
    log.setLevel(logging.INFO)
    log.propagate = False  # the root's console handler (Hydra's) would print each line again, prefixed
    if not any(isinstance(h, _Console) for h in log.handlers):
        log.addHandler(_Console())
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and h not in log.handlers:
            log.addHandler(h)
    for h in list(log.handlers):  # a file handler of an earlier run (a --multirun job) that Hydra closed
        if isinstance(h, logging.FileHandler) and h not in logging.getLogger().handlers:
            log.removeHandler(h)


def run(cfg: AlignfwConfig, run_dir: Path, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build and train; returns the summary (start and final evaluation). Under torchrun this joins
    the process group first and leaves it at the end."""
    summary = Trainer(cfg, run_dir, resolved).train()
    # on an error the group is not destroyed: a peer may be blocked in a collective, and leaving
    # (process exit) is what unblocks it; torchrun then stops the remaining ranks
    distributed.shutdown()
    return summary


#: held-out metrics that are better when lower (matched as a suffix of the metric's name)
LOWER_IS_BETTER = ("loss", "nll", "perplexity", "kl")


def best_is_higher(metric: str, mode: str) -> bool:
    """Whether a larger ``metric`` is better under ``run.best_mode`` (max, min or auto)."""
    if mode not in ("auto", "max", "min"):
        raise ConfigError(f"run.best_mode={mode} is not one of auto, max, min")
    if mode != "auto":
        return mode == "max"
    return not any(part.endswith(LOWER_IS_BETTER) for part in metric.split("/")[1:] or [metric])


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
    log.info("[eval:%s] %s", label, "  ".join(parts))


def _print_change(first: dict[str, float], final: dict[str, float]) -> None:
    a, b = first.get("eval/reward"), final.get("eval/reward")
    if a is not None and b is not None:
        rel = f" ({(b - a) / abs(a) * 100:+.1f}%)" if a else ""  # no percentage of a zero start
        log.info("held-out reward: %.4f -> %.4f%s", a, b, rel)


def _yaml(d: dict[str, Any]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(d)) if d else ""
