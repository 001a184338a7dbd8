"""Run directories: who may write where, and stopping at a safe point.

A run directory holds one run. :func:`check_run_dir` (before any model loads) and
:func:`claim_run_dir` (when training starts) refuse a directory that holds another run:

- a **live** run: ``.alignfw.lock`` names its pid and host; a lock left by a dead process on this
  host (a run killed by SIGKILL) is taken over;
- a **finished** run (``summary.json`` or ``final/``) or a **stopped** one (``metrics.jsonl`` or
  ``checkpoints/``): allowed only when resuming that very run (``run.resume`` inside the
  directory), or with ``run.overwrite=true``, which first deletes that run's outputs.

:class:`StopSignals` turns SIGINT (Ctrl-C) and SIGTERM (what schedulers send) into a request the
training loop honours between steps; a second signal stops at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from alignfw.checkpoint import find_checkpoint
from alignfw.exceptions import AlignfwError, ConfigError

__all__ = [
    "LOCK_NAME",
    "Interrupted",
    "StopSignals",
    "check_run_dir",
    "check_writable_dir",
    "claim_run_dir",
    "release_run_dir",
]

LOCK_NAME = ".alignfw.lock"
#: what a finished run leaves, and what a run that stopped early leaves
FINISHED = ("summary.json", "final")
STARTED = ("metrics.jsonl", "checkpoints")
#: the outputs ``run.overwrite=true`` deletes (the built-in loggers' and report's included)
OUTPUTS = (*FINISHED, *STARTED, "config.yaml", "tensorboard", "report.html", "alignfw.log")
#: exit status of a run stopped by a signal: 128 + the signal number, as shells report it
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(AlignfwError):
    """Training stopped at a safe point after SIGINT or SIGTERM.

    Attributes:
        step: The last completed step.
        steps: ``run.steps``.
        checkpoint: The newest checkpoint (None when checkpointing is off).
        run_dir: The run directory, to resume into.
        exit_code: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, signum: int, step: int, steps: int, checkpoint: Path | None, run_dir: Path) -> None:
        self.signum, self.step, self.steps, self.checkpoint, self.run_dir = signum, step, steps, checkpoint, run_dir
        self.exit_code = EXIT_CODES.get(signal.Signals(signum), 130)
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (run.save_every=0), so a resume starts over"
        super().__init__(f"stopped by {name} after step {step} of {steps}; {where}")


# -- directory checks -----------------------------------------------------------------------------


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _live_owner(run_dir: Path) -> dict[str, Any] | None:
    """The lock's content when a live process (or one on another host) holds ``run_dir``."""
    lock = run_dir / LOCK_NAME
    if not lock.exists():
        return None
    info = _read_lock(lock)
    pid, host = info.get("pid"), info.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and (pid == os.getpid() or not _alive(pid)):
        return None  # stale (its process is gone) or ours
    return info or {"pid": "?", "host": "?"}


def _resuming_here(run_dir: Path, resume: str | None) -> bool:
    if not resume:
        return False
    try:
        ck = find_checkpoint(resume).resolve()
    except AlignfwError:
        return False
    return run_dir.resolve() in ck.parents


def check_writable_dir(path: Path, option: str) -> None:
    """Refuse a directory path that is a file, lies under a file, or cannot be created or written.

    Raises:
        ConfigError: The message names the path, the reason and ``option``, the setting to change.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"the run directory {path} is a file, not a directory; set {option} to a directory path")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"cannot create the run directory {path}: {probe} is a file; set {option} to another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the run directory {path}: {probe} is not writable; set {option} to a writable path")


def check_run_dir(run_dir: Path, *, resume: str | None, overwrite: bool) -> None:
    """Refuse ``run_dir`` if it cannot hold this run; reads only (runs before any model loads).

    Raises:
        ConfigError: ``run_dir`` is a file, cannot be created or written, is in use by a live run,
            or holds another run (finished or stopped) that this run neither resumes nor overwrites.
    """
    check_writable_dir(run_dir, "run.output_dir")
    if not run_dir.exists():
        return
    owner = _live_owner(run_dir)
    if owner is not None:
        raise ConfigError(
            f"the run directory {run_dir} is in use by a live run (pid {owner.get('pid')} on {owner.get('host')}, "
            f"started {owner.get('started', '?')}); wait for it or set run.output_dir to another directory "
            f"(if that run is gone, delete {run_dir / LOCK_NAME})"
        )
    held = [n for n in (*FINISHED, *STARTED) if (run_dir / n).exists()]
    if not held or overwrite or _resuming_here(run_dir, resume):
        return
    state = "a finished run" if any(n in FINISHED for n in held) else "a stopped run"
    hint = f" continue it with run.resume={run_dir}," if (run_dir / "checkpoints").exists() else ""
    raise ConfigError(
        f"the run directory {run_dir} holds {state} ({', '.join(held)}); nothing finished is replaced: set "
        f"run.output_dir to a new directory,{hint} or pass run.overwrite=true to delete its outputs first"
    )


def claim_run_dir(run_dir: Path, *, resume: str | None, overwrite: bool) -> Path:
    """Check ``run_dir`` again, create it, delete the old run's outputs if ``overwrite``, and write
    the lock (pid, host, start time). Returns the lock's path; :func:`release_run_dir` removes it."""
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the run directory {run_dir}: {e.strerror}; set run.output_dir to another path") from e
    if overwrite and not _resuming_here(run_dir, resume):
        removed = [n for n in OUTPUTS if (run_dir / n).exists()]
        for n in removed:
            p = run_dir / n
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if removed:
            print(f"run.overwrite=true: deleted the previous run's {', '.join(removed)} in {run_dir}", file=sys.stderr)
    lock = run_dir / LOCK_NAME
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = run_dir / f"{LOCK_NAME}.{os.getpid()}"
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, lock)
    return lock


def release_run_dir(lock: Path | None) -> None:
    """Remove the lock if it is still this process's."""
    if lock is not None and _read_lock(lock).get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


# -- signals --------------------------------------------------------------------------------------


class StopSignals:
    """Within ``with StopSignals() as stop:``, SIGINT and SIGTERM set ``stop.signum`` (the loop stops
    at its next safe point); a second signal raises ``KeyboardInterrupt`` at once. Outside the main
    thread (signals cannot be caught there) it does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if os.environ.get("RANK", "0") not in ("", "0"):  # under torchrun rank 0 speaks for all
            return
        print(
            f"\nalignfw: {signal.Signals(signum).name} received: stopping after the current step "
            "(send it again to stop at once, without a checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
