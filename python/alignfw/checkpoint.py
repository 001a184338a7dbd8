"""Atomic, pickle-free checkpoints.

A checkpoint is a directory ``<run>/checkpoints/step_00000040/`` holding

- ``model/``: the policy in Hugging Face format (``save_pretrained``, safetensors); for a LoRA
  policy only its adapter (``adapter_model.safetensors``: the base weights are frozen and are read
  from ``model.path`` again on resume);
- ``state.safetensors``: every tensor of the trainer state (optimizer moments, value head,
  reference model, RNG states);
- ``state.json``: the rest of the trainer state (step, hyper-parameters, Python RNG), with each
  tensor replaced by ``{"__tensor__": key}``.

``state.json`` also names the algorithm and model that wrote it (``"algorithm"``, ``"model"``), so
resuming it under another says so instead of failing deep inside the optimizer.

It is written under a temporary name and renamed into place, and ``latest`` (a one-line file,
replaced atomically) names the newest complete one, so a run killed at any moment (or a write
that fails: a full disk) leaves the previous checkpoint intact, never half of one. Nothing is
ever unpickled. Files get the permissions a plain ``open()`` gives (see ``rundir.share_files``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from alignfw.exceptions import CheckpointError

__all__ = [
    "EncodedState",
    "check_safetensors",
    "encode_state",
    "find_checkpoint",
    "load_state",
    "save_checkpoint",
    "save_state",
    "share_files",
]


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        if hasattr(obj, "full_tensor"):  # an FSDP2 shard (DTensor): gathered, so every rank must encode
            obj = obj.full_tensor()
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_encode(k, f"{key}.k{i}", tensors), _encode(v, f"{key}.{i}", tensors)] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return {"__tuple__" if isinstance(obj, tuple) else "__list__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot checkpoint a {type(obj).__name__} at {key!r}: state must be tensors, numbers, strings, lists and dicts")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__list__" in obj:
            return [_decode(v, tensors) for v in obj["__list__"]]
    return obj


@dataclass
class EncodedState:
    """A trainer state split into its JSON tree and its CPU tensors, ready to write."""

    tree: Any
    tensors: dict[str, torch.Tensor]


def encode_state(state: dict[str, Any]) -> EncodedState:
    """Split ``state`` into JSON and tensors. Under FSDP2 sharded tensors are gathered here, so in a
    multi-process run every rank encodes (in the same order) and rank 0 writes the result."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, "s", tensors)
    return EncodedState(tree, tensors)


def save_state(directory: Path, state: dict[str, Any] | EncodedState) -> None:
    """Write ``state`` as ``state.safetensors`` + ``state.json`` into ``directory`` (not atomic by itself)."""
    enc = state if isinstance(state, EncodedState) else encode_state(state)
    save_file(enc.tensors, str(directory / "state.safetensors"))
    (directory / "state.json").write_text(json.dumps(enc.tree))


def check_safetensors(files: list[Path], fix: str) -> None:
    """Open the header of each safetensors file (cheap: nothing is loaded) and name the first one
    that is truncated, empty or not safetensors at all.

    Args:
        files: The files to check.
        fix: What the message tells the user to do.

    Raises:
        CheckpointError: ``<file> is not a readable safetensors file (<why>); <fix>``.
    """
    from safetensors import safe_open

    for f in files:
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception as e:  # SafetensorError (truncated, garbage) or OSError
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{f} is not a readable safetensors file ({why}); {fix}") from e


def load_state(directory: Path) -> dict[str, Any]:
    fix = "the checkpoint may be truncated: resume from an earlier one (checkpoints/step_*)"
    try:
        tree = json.loads((directory / "state.json").read_text())
        check_safetensors([directory / "state.safetensors"], fix)
        tensors = load_file(str(directory / "state.safetensors"))
        return _decode(tree, tensors)
    except CheckpointError:
        raise
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {directory} is incomplete: {e.filename} is missing; resume from another checkpoint") from e
    except Exception as e:
        raise CheckpointError(f"checkpoint {directory} is unreadable ({type(e).__name__}: {e}); {fix}") from e


def save_checkpoint(run_dir: Path, step: int, model: Any, state: dict[str, Any] | EncodedState, keep: int = 2) -> Path:
    """Write a complete checkpoint atomically and prune all but the newest ``keep``."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        model.save_pretrained(str(tmp / "model"))
        save_state(tmp, state)
        share_files(tmp)
        _fsync_dir(tmp)
    except BaseException:  # a full disk, an interrupt: the previous checkpoint and `latest` stay as they were
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / f".latest_{os.getpid()}"
    latest_tmp.write_text(final.name + "\n")
    os.replace(latest_tmp, root / "latest")
    _fsync_dir(root)
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run directory, a ``checkpoints/`` directory or a checkpoint itself."""
    p = Path(path).expanduser()
    if (p / "state.json").exists():
        return p
    for root in (p / "checkpoints", p):
        latest = root / "latest"
        if latest.exists():
            ck = root / latest.read_text().strip()
            if ck.exists():
                return ck
    raise CheckpointError(
        f"run.resume={str(path)!r}: no checkpoint found there (looked for state.json, checkpoints/latest); "
        "give a run directory that was saved with run.save_every > 0, or a checkpoints/step_* directory"
    )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- permissions ----------------------------------------------------------------------------------


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def share_files(directory: Path) -> None:
    """Give every file under ``directory`` the mode a plain ``open()`` gives (0644 under umask 022).

    safetensors (>= 0.7) writes through a private temporary file and renames it, so weights end up
    0600 while every other output is 0644: a group sharing the machine could not read the model.
    """
    mode = _default_mode()
    for p in [directory, *directory.rglob("*")] if directory.is_dir() else [directory]:
        if p.is_file() and not p.is_symlink() and (p.stat().st_mode & 0o777) != mode:
            os.chmod(p, mode)
