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
usage: python -m alignfw +algo=NAME [+reward=NAME] [model=NAME] [data=NAME] [key=value ...]
       python -m alignfw plugins              every plugin, its kind, origin and options (with defaults)
       python -m alignfw rerun RUN_DIR [key=value ...]   run a saved run's config.yaml again
       python -m alignfw --version            alignfw, torch and transformers versions
       python -m alignfw -h | --help          this page (Hydra's own: --hydra-help)

example: python -m alignfw +reward=bleu +algo=ppo run.steps=50 algo.lr=1e-3
"""

HELP_TAIL = """\
common options (each plugin's own: python -m alignfw plugins):
  run.steps=120 run.batch_size=64 run.eval_every=40 run.samples=4   how long, how often to evaluate
  run.save_every=0 run.resume=RUN_DIR                               checkpoints and exact resume
  run.trackers=[tensorboard,wandb,mlflow,trackio] run.project=NAME  experiment trackers
  rollout.max_new_tokens=16 rollout.temperature=1.0                 sampling (online algorithms)
  device=auto seed=0                                                where and how to run
Hydra: --cfg job (print the config), --multirun (sweeps), hydra.run.dir=DIR (the run directory).
From Python: alignfw.train(...) (docs/python-api.md)."""


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
        if argv and argv[0] in ("-h", "--help", "usage") or any(a in ("-h", "--help") for a in argv):
            print(help_page())
            return
        if argv and argv[0] in ("--version", "-V"):
            print(version_line())
            return
        if argv and argv[0] == "rerun":
            argv = rerun_overrides(argv[1:])
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
            cfg = typed_config(cfg)  # a saved run's config.yaml (rerun) gets the schema back
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

    argv = [a.replace("--hydra-help", "--help") for a in argv]
    sys.argv = [sys.argv[0] if sys.argv else "alignfw", *check_overrides(normalize_overrides(argv)), *_rank_overrides()]
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
    argv = [a[1:] if a.startswith(groups) else a for a in argv]
    # the engine is the Hydra group rollout/engine (typed options rollout.engine.<field>), added on demand;
    # a value that is not a name (rollout.engine=0) is quoted, so Hydra looks for it like any name
    return ["+rollout/engine=" + _group_value(a.split("=", 1)[1]) if a.startswith(("rollout.engine=", "+rollout.engine=")) else a for a in argv]


def _group_value(value: str) -> str:
    import re

    return value if re.fullmatch(r"[A-Za-z_][\w.-]*", value) else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def version_line() -> str:
    """``alignfw 0.1.0 (torch 2.x, transformers 4.x, Python 3.x)``."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from alignfw import __version__

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"alignfw {__version__} (torch {ver('torch')}, transformers {ver('transformers')}, Python {platform.python_version()})"


def help_page() -> str:
    """Usage, every algorithm, reward, model and data source by name with its description, and the
    common options; ``python -m alignfw plugins`` has each one's options."""
    from alignfw.registry import KINDS, get_registry

    reg = get_registry()
    blocks = [USAGE.rstrip()]
    for kind, (_, group, how) in KINDS.items():
        items = [r for r in reg.all() if r.kind == kind]
        title = {"data": "data sources", "algorithm": "algorithms"}.get(kind, kind + "s")
        lines = [f"{title} ({how.format('NAME')}):"] + [f"  {r.name:<16} {r.description}".rstrip() for r in items]
        lines += [f"  {name:<16} preset (conf/{group}/{name}.yaml)" for name in _presets(group)]
        blocks.append("\n".join(lines if len(lines) > 1 else [*lines, "  (none installed)"]))
    blocks.append("each one's options and defaults: python -m alignfw plugins\n\n" + HELP_TAIL)
    return "\n\n".join(blocks)


def _presets(group: str) -> list[str]:
    """The YAML presets shipped in ``alignfw/conf/<group>/`` (``model=tiny``)."""
    from importlib.resources import files

    folder = files("alignfw.conf") / group
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def rerun_overrides(args: list[str]) -> list[str]:
    """``rerun RUN_DIR [overrides]``: Hydra's arguments that compose ``RUN_DIR/config.yaml`` as the
    primary config (every value as saved, presets already applied), then the overrides."""
    from pathlib import Path

    from alignfw.exceptions import ConfigError

    if not args or args[0].startswith(("-", "+")) or "=" in args[0]:
        raise ConfigError("rerun needs a run directory: python -m alignfw rerun outputs/<date>/<time> [key=value ...]")
    run_dir = Path(args[0])
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} has no config.yaml, so it is not an alignfw run directory; give outputs/<date>/<time>")
    # a new run directory (Hydra's default, outputs/<date>/<time>) unless the overrides name one
    return ["--config-path", str(run_dir.resolve()), "--config-name", "config", "run.output_dir=null", *args[1:]]


def check_overrides(argv: list[str]) -> list[str]:
    """Reject a ``key=value`` override whose key is no option, whether written ``key=`` or ``+key=``
    (Hydra would add the latter silently), naming the closest options; drop the ``+`` of a key
    that exists. The config is composed from the group choices of ``argv`` to know the options.
    ``hydra.*`` keys, ``++key=`` (force-add) and sweeps (``--multirun``) go to Hydra unchecked."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from alignfw.exceptions import ConfigError

    if any(a in ("-m", "--multirun") for a in argv) or GlobalHydra.instance().is_initialized():
        return argv
    groups, dotted, config_path, config_name = [], [], None, "config"
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a in ("--config-path", "-cp", "--config-name", "-cn") and i + 1 < len(argv):
            config_path, config_name = (argv[i + 1], config_name) if a in ("--config-path", "-cp") else (config_path, argv[i + 1])
            skip = True
        elif "=" in a and not a.startswith(("-", "++", "~")):
            key = a.split("=", 1)[0].lstrip("+")
            if key.split(".")[0] != "hydra":
                (dotted if "." in key else groups).append(a)
    if not dotted and not groups:
        return argv

    def init() -> Any:
        if config_path is not None:
            return hydra.initialize_config_dir(config_dir=config_path, version_base="1.3")
        return hydra.initialize_config_module(config_module="alignfw.conf", version_base="1.3")

    try:
        with init():
            cfg = typed_config(hydra.compose(config_name, overrides=groups))
    except ConfigError:
        raise
    except Exception as e:  # a plugin or preset name that does not exist
        GlobalHydra.instance().clear()
        raise composition_error(e) from None
    out = []
    for a in argv:
        if a in dotted:
            path = a.split("=", 1)[0].lstrip("+")
            known, free = option_exists(cfg, path)
            if not known:
                raise ConfigError(unknown_option_message(cfg, path))
            if a.startswith("+") and not free:
                a = a[1:]  # +run.steps=3 on an existing option is the plain override
        out.append(a)
    plain = {a.lstrip("+") for a in dotted}
    if dotted:  # the values: a wrong type (run.steps=abc) fails here in one line, not in Hydra's report
        try:
            with init():
                hydra.compose(config_name, overrides=[a for a in out if a in groups or a.lstrip("+") in plain])
        except Exception as e:
            GlobalHydra.instance().clear()
            raise composition_error(e) from None
    return out


def composition_error(e: BaseException) -> Exception:
    """Hydra's or OmegaConf's composition error as one :class:`ConfigError` line: an unknown plugin
    or preset name with the available ones, or a value of the wrong type with its key."""
    from hydra.errors import MissingConfigException

    from alignfw.exceptions import ConfigError

    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if isinstance(e, MissingConfigException):
        options = getattr(e, "options", None) or [ln for ln in lines[1:] if not ln.startswith(("Available", "Primary", "provider", "Set the"))]
        options = [o for o in options if not o.endswith("_schema")]  # the typed schemas presets extend
        missing = str(getattr(e, "missing_cfg_file", "") or "")
        group, _, name = missing.rpartition("/")
        what = f"{group.replace('/', '.')}={name} is not installed" if group else lines[0]
        return ConfigError(f"{what}: choose one of {', '.join(sorted(options))} (`python -m alignfw plugins` lists every plugin)")
    override = lines[0].removeprefix("Error merging override ") if lines and lines[0].startswith("Error merging override") else None
    while e.__cause__ is not None:  # Hydra wraps OmegaConf's error, which says what is wrong
        e = e.__cause__
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or lines
    key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None)
    head = override or key
    return ConfigError((f"{head}: " if head else "") + (lines[0] if lines else type(e).__name__))


def typed_config(cfg: Any) -> Any:
    """``cfg`` with the typed schema: itself when composed from ``conf/config.yaml``; for a saved
    run's ``config.yaml`` (plain values, as resolved), the top level merged into
    :class:`AlignfwConfig` and each plugin node into the config class its ``_name_`` registered,
    so options are type-checked and misspellings rejected as in a fresh run."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from alignfw._hydra import named_config
    from alignfw.config import NAME_KEY, AlignfwConfig
    from alignfw.exceptions import ConfigError
    from alignfw.registry import get_registry

    if OmegaConf.get_type(cfg) is AlignfwConfig:
        return cfg
    plain: dict[str, Any] = OmegaConf.to_container(cfg)  # type: ignore[assignment]
    reg = get_registry()
    nodes = {}
    try:
        for key, kind in (("model", "model"), ("data", "data"), ("reward", "reward"), ("algo", "algorithm")):
            node = plain.pop(key, None)
            if isinstance(node, dict):
                name = node.get(NAME_KEY)
                if not isinstance(name, str):
                    raise ConfigError(f"{key} in the saved config has no {NAME_KEY}, so its plugin is unknown; set {key}=<name>")
                nodes[key] = OmegaConf.merge(OmegaConf.structured(named_config(reg.get(kind, name).config, name)), node)
        typed = OmegaConf.merge(OmegaConf.structured(AlignfwConfig), plain)
        for key, node in nodes.items():
            typed[key] = node
    except OmegaConfBaseException as e:
        raise ConfigError(f"the saved config does not fit this alignfw: {str(e).splitlines()[0]}") from None
    return typed


def option_exists(cfg: Any, path: str) -> tuple[bool, bool]:
    """``(exists, free)``: whether ``path`` names an option of ``cfg``, and whether it lies in a free
    dict (a ``dict[str, Any]`` field, where new keys are allowed)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    node: Any = cfg
    for part in path.split("."):
        if isinstance(node, DictConfig):
            if OmegaConf.get_type(node) in (dict, None) and node is not cfg:
                return True, True
            if part not in node:
                return False, False
            node = node._get_node(part)
        elif isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                return False, False
            node = node._get_node(int(part))
        else:  # below a leaf (a value, or a plugin node that is null in this config)
            return False, False
    return True, False


def unknown_option_message(cfg: Any, path: str) -> str:
    """``unknown option 'algo.lrr' (did you mean algo.lr?); ...`` with the options of that node."""
    import difflib

    from omegaconf import OmegaConf

    parent, _, leaf = path.rpartition(".")
    head = path.split(".")[0]
    if head in ("algo", "reward", "model", "data") and OmegaConf.select(cfg, head) is None:
        return f"{path} is set but no {head} is chosen; add +{head}=NAME (python -m alignfw --help lists them)"
    node = OmegaConf.select(cfg, parent) if parent else cfg
    names = [f"{parent}.{k}" if parent else str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
    close = difflib.get_close_matches(path, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    cls = OmegaConf.get_type(node).__name__ if OmegaConf.is_dict(node) and OmegaConf.get_type(node) not in (dict, None) else ""
    where = f"it is not an option of {cls}" if cls else f"{parent or 'the config'} has no such key"
    return f"unknown option {path!r}{hint}: {where}; `python -m alignfw plugins` lists every option"


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
                print(f"      {group.replace('/', '.')}.{field}: {tname} = {default!r}" + (f"  ({ranges[field]})" if field in ranges else ""))
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
