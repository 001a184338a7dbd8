"""Command line: ``python -m alignfw [overrides...]`` trains; ``python -m alignfw plugins`` lists.

Training is a Hydra app over ``alignfw/conf`` plus every plugin's config dataclass, so all Hydra
features work (``--multirun``, ``--cfg job``, ``hydra.run.dir=...``). Errors alignfw raises on
purpose (a missing path, an unknown plugin, a NaN reward) print as one message with the fix and
exit with status 2, without a traceback; ``ALIGNFW_DEBUG=1`` shows the traceback.
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
    print(f"alignfw: error: {e}", file=sys.stderr)
    sys.exit(2)


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

    sys.argv = [sys.argv[0] if sys.argv else "alignfw", *normalize_overrides(argv)]
    _app()


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
    """One block per plugin kind: name, origin, description and options with defaults."""
    from alignfw.registry import KINDS, get_registry

    reg = get_registry()
    for kind, (_, group, how) in KINDS.items():
        items = [r for r in reg.all() if r.kind == kind]
        print(f"{kind}s  ({how.format('<name>')})")
        if not items:
            print("  (none)")
        for r in items:
            print(f"  {r.name:<16} {r.origin}" + (f" — {r.description}" if r.description else ""))
            for field, tname, default in r.options():
                print(f"      {group}.{field}: {tname} = {default!r}")
        print()
