"""Command line: ``python -m alignfw [overrides...]`` trains; ``python -m alignfw plugins`` lists.

Training is a Hydra app over ``alignfw/conf`` plus every plugin's config dataclass, so all Hydra
features work (``--multirun``, ``--cfg job``, ``hydra.run.dir=...``). Errors alignfw raises on
purpose (a missing path, an unknown plugin, a NaN reward) print as one message with the fix and
exit with status 2, without a traceback; ``ALIGNFW_DEBUG=1`` shows the traceback.

Under torchrun (``WORLD_SIZE > 1``) the same command runs in every rank. Ranks other than 0 get
Hydra's run directory in a throw-away temporary folder (the pipeline uses rank 0's directory), and
an error message names the rank it came from. A rank that fails exits at once without leaving the
process group, so its peers' pending collectives fail instead of waiting, and torchrun stops them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

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
    except AlignfwError as e:
        _fail(e)


def _fail(e: BaseException) -> None:
    if os.environ.get("ALIGNFW_DEBUG"):
        raise e
    print(f"alignfw: error{_rank_tag()}: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


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
        except AlignfwError as e:  # inside Hydra's wrapper: report here, before it adds a traceback
            _fail(e)
        except Exception as e:
            if not _peer_failure(e):
                raise
            _fail(AlignfwError(f"a collective failed because another rank stopped (its message is above): {str(e).splitlines()[0]}"))

    sys.argv = [sys.argv[0] if sys.argv else "alignfw", *normalize_overrides(argv), *_rank_overrides()]
    _app()


def normalize_overrides(argv: list[str]) -> list[str]:
    """``+algo=ppo`` and ``algo=ppo`` mean the same (likewise reward, model, data).

    ``conf/config.yaml`` lists every plugin group in its defaults (``algo: null``) so that the
    tuned preset ``conf/preset/<model>_<algo>.yaml`` can be selected by interpolation and applied
    *after* the algorithm's defaults. Hydra would reject ``+algo=`` for a group already in the
    defaults list, so the documented ``+group=`` spelling is mapped onto the plain override.
    """
    groups = ("+algo=", "+reward=", "+model=", "+data=")
    argv = [a[1:] if a.startswith(groups) else a for a in argv]
    # the engine is the Hydra group rollout/engine (typed options rollout.engine.<field>), added on demand
    return ["+rollout/engine=" + a.split("=", 1)[1] if a.startswith(("rollout.engine=", "+rollout.engine=")) else a for a in argv]


def _quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def print_plugins() -> None:
    """One block per plugin kind: name, origin, description and options with defaults."""
    from alignfw.registry import KINDS, get_registry

    reg = get_registry()
    for kind, (_, group, how) in KINDS.items():
        items = [r for r in reg.all() if r.kind == kind]
        print(f"{'data sources' if kind == 'data' else kind + 's'}  ({how.format('<name>')})")
        if not items:
            print("  (none)")
        for r in items:
            print(f"  {r.name:<16} {r.origin}" + (f" — {r.description}" if r.description else ""))
            for field, tname, default in r.options():
                print(f"      {group.replace('/', '.')}.{field}: {tname} = {default!r}")
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
