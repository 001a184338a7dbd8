"""Command line: ``python -m alignfw [overrides...]`` trains; ``python -m alignfw plugins`` lists.

Training is a Hydra app over ``alignfw/conf`` plus every plugin's config dataclass, so all Hydra
features work (``--multirun``, ``--cfg job``, ``hydra.run.dir=...``).

One error boundary: every expected failure (an option out of range, a missing or malformed file,
damaged weights, an unwritable output directory, a plugin that raises) prints one message with the
fix and exits with status 2; the traceback goes to ``alignfw.log`` in Hydra's run directory, and
``ALIGNFW_DEBUG=1`` also prints it. SIGINT (Ctrl-C) and SIGTERM stop training at the next step
boundary with a checkpoint and print the command that resumes; the exit status is 130 for SIGINT
and 143 for SIGTERM (128 + the signal number, as a shell reports a process killed by it).

Under torchrun (``WORLD_SIZE > 1``) the same command runs in every rank. Ranks other than 0 get
Hydra's run directory in a throw-away temporary folder (the pipeline uses rank 0's directory), and
an error message names the rank it came from. A rank that fails exits at once without leaving the
process group, so its peers' pending collectives fail instead of waiting, and torchrun stops them.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

__all__ = ["main"]

USAGE = """\
usage: python -m alignfw [+algo=NAME] [+reward=NAME] [model=NAME] [data=NAME] [key=value ...]
       python -m alignfw plugins           list every plugin, its kind, origin and options
       python -m alignfw --help            Hydra's help (config groups and options)

example: python -m alignfw +reward=bleu +algo=ppo run.steps=50 algo.lr=1e-3
"""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    from alignfw.exceptions import AlignfwError

    _terminate_as_interrupt()
    try:
        if argv and argv[0] == "plugins":
            try:
                print_plugins()
            except BrokenPipeError:  # `python -m alignfw plugins | head`
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        if argv and argv[0] in ("-h", "usage"):
            print(USAGE)
            return
        _train(argv)
    except (AlignfwError, KeyboardInterrupt) as e:
        _fail(e, argv)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which stops at a step boundary instead)."""


def _terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C (``finally`` blocks run, the run directory's lock is released)."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _fail(e: BaseException, argv: list[str] | None = None, cause: BaseException | None = None) -> NoReturn:
    """Print one line (``alignfw: error: ...``) and exit: 2 for errors, 130 / 143 for SIGINT / SIGTERM.
    The traceback of ``cause`` (default: ``e``) goes to the log file the message names, and with
    ``ALIGNFW_DEBUG=1`` to stderr first."""
    import traceback

    from alignfw.rundir import Interrupted

    if os.environ.get("ALIGNFW_DEBUG"):
        traceback.print_exception(cause or e, file=sys.stderr)
    if isinstance(e, Interrupted):
        if os.environ.get("RANK", "0") not in ("", "0"):  # every rank stopped at the same step; rank 0 reports
            sys.exit(e.exit_code)
        print(f"alignfw: {e}\nresume with: {resume_command(argv or [], e.run_dir)}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    if isinstance(e, KeyboardInterrupt):
        name, code = ("SIGTERM", 143) if isinstance(e, Terminated) else ("SIGINT", 130)
        print(
            f"alignfw: stopped by {name}{_rank_tag()} at once (a second signal, or one while loading); checkpoints already "
            "written are intact",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(code)
    log = _log_traceback(cause or e)
    where = f" (traceback in {log})" if log else ""
    print(f"alignfw: error{_rank_tag()}: {e}{where}", file=sys.stderr, flush=True)
    sys.exit(2)


def _log_traceback(e: BaseException) -> str | None:
    """Append ``e``'s traceback to ``alignfw.log`` in Hydra's run directory; its path, or None."""
    import traceback

    try:
        from hydra.core.hydra_config import HydraConfig

        path = os.path.join(HydraConfig.get().runtime.output_dir, "alignfw.log")
        with open(path, "a") as f:
            f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        return path
    except Exception:  # no Hydra run yet (plugins failed to load) or an unwritable directory
        return None


def resume_command(argv: list[str], run_dir: Any) -> str:
    """The command that continues the interrupted run in its own directory."""
    import shlex

    from alignfw.distributed import env_world_size

    keep = [a for a in argv if not a.startswith(("run.resume=", "run.output_dir=", "run.overwrite=", "+run.resume="))]
    world = env_world_size()
    launcher = ["torchrun", f"--nproc_per_node={world}", "-m", "alignfw"] if world > 1 else ["python", "-m", "alignfw"]
    return shlex.join([*launcher, *keep, f"run.resume={run_dir}", f"run.output_dir={run_dir}"])


def _os_message(e: OSError) -> str:
    """One line for a file system error: the file, the reason, the fix."""
    what = e.filename if e.filename is not None else "a file"
    return (
        f"cannot use {what}: {e.strerror or e}; check that the path exists, is writable and its disk has space "
        "(run.output_dir, hydra.run.dir, data.path, model.path)"
    )


def _rank_tag() -> str:
    """`` (rank N of W)`` under torchrun, else empty."""
    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    return f" (rank {rank} of {world})" if world not in ("", "1") else ""


def _peer_failure(e: BaseException) -> bool:
    """A collective that failed because another rank left (its own message explains why)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    return isinstance(e, (dist.DistError, RuntimeError)) and any(
        s in str(e) for s in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL", "Timed out", "timeout")
    )


def _rank_overrides() -> list[str]:
    """Hydra overrides for ranks other than 0: their Hydra run directory is a temporary folder
    (rank 0's directory is broadcast to them), so only rank 0 writes outputs."""
    if os.environ.get("RANK", "0") in ("", "0"):
        return []
    import atexit
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix=f"alignfw-rank{os.environ['RANK']}-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return [f"hydra.run.dir={tmp}", "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def _train(argv: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from alignfw._hydra import register_plugin_configs
    from alignfw.exceptions import AlignfwError, ConfigError
    from alignfw.registry import get_registry

    register_plugin_configs(get_registry())

    @hydra.main(version_base="1.3", config_path="conf", config_name="config")
    def _app(cfg: DictConfig) -> None:
        from hydra.core.hydra_config import HydraConfig

        from alignfw import pipeline

        try:
            _quiet_libraries()
            missing = sorted(OmegaConf.missing_keys(cfg))
            if missing:
                raise ConfigError(
                    f"missing required option{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
                    + " ".join(f"add {k}=<value>" for k in missing)
                )
            resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
            typed = OmegaConf.to_object(cfg)
            run_dir = typed.run.output_dir or HydraConfig.get().runtime.output_dir
            from pathlib import Path

            pipeline.run(typed, Path(run_dir), resolved)
        except (AlignfwError, KeyboardInterrupt) as e:  # inside Hydra's wrapper: report here, before it adds a traceback
            _fail(e, argv)
        except OSError as e:  # the file system: a read-only directory, a full disk, a path that is a file
            _fail(AlignfwError(_os_message(e)), argv, cause=e)
        except Exception as e:
            if not _peer_failure(e):
                raise
            _fail(AlignfwError(f"a collective failed because another rank stopped (its message is above): {str(e).splitlines()[0]}"), argv, cause=e)

    sys.argv = [sys.argv[0] if sys.argv else "alignfw", *normalize_overrides(argv), *_rank_overrides()]
    _check_hydra_dir(argv)
    _app()


def _check_hydra_dir(argv: list[str]) -> None:
    """Hydra creates ``hydra.run.dir`` before alignfw runs and reports a failure with a traceback:
    check the path first (the default, ``outputs/<date>/<time>``, is checked by the pipeline)."""
    from pathlib import Path

    from alignfw.rundir import check_writable_dir

    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    if given and "${" not in given[-1] and os.environ.get("RANK", "0") in ("", "0"):
        check_writable_dir(Path(given[-1]).expanduser(), "hydra.run.dir")


def normalize_overrides(argv: list[str]) -> list[str]:
    """``+algo=ppo`` and ``algo=ppo`` mean the same (likewise reward, model, data).

    ``conf/config.yaml`` lists every plugin group in its defaults (``algo: null``) so that the
    tuned preset ``conf/preset/<model>_<algo>.yaml`` can be selected by interpolation and applied
    *after* the algorithm's defaults. Hydra would reject ``+algo=`` for a group already in the
    defaults list, so the documented ``+group=`` spelling is mapped onto the plain override.
    """
    groups = ("+algo=", "+reward=", "+model=", "+data=")
    return [a[1:] if a.startswith(groups) else a for a in argv]


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def print_plugins() -> None:
    """The top-level options, then one block per plugin kind: name, origin, description and options
    with defaults and valid ranges."""
    from alignfw.config import AlignfwConfig
    from alignfw.registry import KINDS, config_options, get_registry

    reg = get_registry()
    print("top-level options  (key=value)")
    for key, tname, default, rng in config_options(AlignfwConfig):
        if key not in KINDS and key != "algo":  # the plugin nodes are listed below
            print(f"      {key}: {tname} = {default!r}" + (f"  ({rng})" if rng else ""))
    print()
    for kind, (_, group, how) in KINDS.items():
        items = [r for r in reg.all() if r.kind == kind]
        print(f"{'data sources' if kind == 'data' else kind + 's'}  ({how.format('<name>')})")
        if not items:
            print("  (none)")
        for r in items:
            print(f"  {r.name:<16} {r.origin}" + (f" — {r.description}" if r.description else ""))
            ranges = r.ranges()
            for field, tname, default in r.options():
                print(f"      {group}.{field}: {tname} = {default!r}" + (f"  ({ranges[field]})" if field in ranges else ""))
        print()
    print("run hooks  (plugins called at run start, each step, each checkpoint and run end)")
    for name, origin, hooks in lifecycle_plugins():
        print(f"  {name:<16} {origin} — {', '.join(hooks)}")
    print()


def lifecycle_plugins() -> list[tuple[str, str, list[str]]]:
    """``(name, origin, hooks)`` of every loaded plugin implementing a lifecycle hook (loggers, report, ...)."""
    from alignfw.registry import get_plugin_manager, plugin_origin

    pm = get_plugin_manager()
    out = []
    for plugin in pm.get_plugins():
        hooks = [c.name for c in pm.get_hookcallers(plugin) or [] if c.name.startswith("on_")]
        if hooks:
            out.append((pm.get_name(plugin) or "?", plugin_origin(pm, plugin), sorted(hooks)))
    return sorted(out)
