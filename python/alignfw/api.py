"""The Python API: train from a script or a notebook with the options of the command line.

    import alignfw

    def brevity(prompts, completions, **columns):
        return [-len(c.split()) / 10 for c in completions]

    summary = alignfw.train("grpo", reward=["bleu", brevity], reward_weights=[1.0, 0.2], overrides={"run.steps": 20})

:func:`train` composes the very config the command line composes (``conf/config.yaml``, the
plugin presets ``conf/preset/<model>_<algo>.yaml``, then the overrides), so
``alignfw.train("ppo", reward="bleu", overrides=["run.steps=50"])`` and
``python -m alignfw +algo=ppo +reward=bleu run.steps=50`` run the same job. Python-only inputs
enter through the plugin interfaces, as a third-party plugin would (``hookspecs``):

- a reward given as a plain callable (TRL's shape, ``f(prompts, completions, **columns) ->
  list[float]``, the dataset's other columns as keyword lists) is registered for the run as a
  reward plugin (:class:`CallableReward`); several rewards, or any callable, are fused by the
  built-in ``combine`` reward with ``reward_weights``, each logged as ``reward/<name>``;
- data given as a list of dicts or a ``datasets.Dataset`` is registered for the run as the data
  source ``in_memory`` (:class:`InMemorySource`), whose rows are read exactly as the file sources
  read theirs (``data.prompt_key``, ``data.kind``, ``data.eval_fraction``, ... apply).

The runtime plugin is unregistered when :func:`train` returns. Reference for the reward shape:
TRL's ``GRPOTrainer(reward_funcs=...)`` (https://huggingface.co/docs/trl/grpo_trainer).
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from alignfw.config import NAME_KEY, AlignfwConfig
from alignfw.exceptions import ConfigError, DataError, RewardFunctionError
from alignfw.hookspecs import hookimpl
from alignfw.plugins.data.sources import FileSourceConfig, rows_to_records, split_indices
from alignfw.types import Record

__all__ = ["CallableReward", "CallableRewardConfig", "InMemoryConfig", "InMemorySource", "compose_config", "train"]

#: the registered name of data given in Python (``data=[...]`` or a ``datasets.Dataset``)
IN_MEMORY = "in_memory"
#: Record fields passed to a callable reward as keyword columns when the records have them
_RECORD_COLUMNS = ("references", "response", "responses", "chosen", "rejected", "feedback", "score")

RewardSpec = Any  # a registered reward name, a reward config dataclass, or a callable


# ---------------------------------------------------------------------------------------------
# Rewards given as callables
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CallableRewardConfig:
    """A reward function given in Python (``alignfw.train(reward=f)``); it has no options."""


def qualified_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a callable (``mypkg.rewards.brevity``), for messages."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    qual = getattr(fn, "__qualname__", None) or getattr(target, "__qualname__", repr(fn))
    module = getattr(fn, "__module__", None) or getattr(target, "__module__", None)
    return f"{module}.{qual}" if module else qual


def reward_columns(records: Sequence[Record]) -> dict[str, list[Any]]:
    """The keyword columns a callable reward receives: every extra column of the data (``Record.meta``)
    under its own name and the record fields alignfw read (``references``, ``response``, ...), each a
    list with one entry per completion (``None`` where a record lacks it)."""
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec.meta))
    cols = {k: [rec.meta.get(k) for rec in records] for k in names if k not in ("prompts", "completions")}
    for f in _RECORD_COLUMNS:
        values = [getattr(rec, f) for rec in records]
        if any(v is not None for v in values):
            cols[f] = values
    return cols


class CallableReward:
    """A plain function as an alignfw reward: ``fn(prompts, completions, **columns) -> list[float]``.

    The scores are checked here so that a bad one names the function: an exception, ``None``, a
    non-number, NaN or infinity, or a list of the wrong length raises
    :class:`alignfw.exceptions.RewardFunctionError` with ``module.qualname`` in the message.
    """

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn, self.name, self.qualname = fn, name, qualified_name(fn)

    def __call__(self, prompts: list[str], responses: list[str], records: Sequence[Record]) -> list[float]:
        try:
            out = self.fn(list(prompts), list(responses), **reward_columns(records))
        except Exception as e:
            raise RewardFunctionError(f"reward function {self.qualname} raised {type(e).__name__}: {e}") from e
        return self._check(out, len(prompts))

    def _check(self, out: Any, n: int) -> list[float]:
        fix = "it must return one float per completion, e.g. [1.0, 0.0, ...]"
        if out is None:
            raise RewardFunctionError(f"reward function {self.qualname} returned None; {fix} (did it miss a return?)")
        if hasattr(out, "tolist"):  # torch tensors, numpy arrays
            out = out.tolist()
        if isinstance(out, (str, bytes)) or not isinstance(out, Sequence):
            raise RewardFunctionError(f"reward function {self.qualname} returned a {type(out).__name__}; {fix}")
        if len(out) != n:
            raise RewardFunctionError(f"reward function {self.qualname} returned {len(out)} scores for {n} completions; {fix}")
        scores = []
        for i, v in enumerate(out):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise RewardFunctionError(f"reward function {self.qualname} returned {v!r} at index {i}; {fix}")
            if not math.isfinite(v):
                raise RewardFunctionError(
                    f"reward function {self.qualname} returned {v} at index {i} (completion {i} of {n}); it must return "
                    "finite numbers (guard divisions by zero, skip empty completions)"
                )
            scores.append(float(v))
        return scores


# ---------------------------------------------------------------------------------------------
# Data given in Python
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class InMemoryConfig(FileSourceConfig):
    """Options of data given in Python (``alignfw.train(data=[{...}, ...])``): the column mapping
    and the held-out split of the file sources; ``path``, ``format``, ``eval_path``, ``split`` and
    ``eval_split`` do not apply (give ``eval_data=`` instead of a second file)."""


class InMemorySource:
    """Records from rows held in memory, converted exactly as the file sources convert theirs."""

    def __init__(self, cfg: InMemoryConfig, rows: list[tuple[str, dict[str, Any]]], eval_rows: list[tuple[str, dict[str, Any]]]) -> None:
        unused = [f for f in ("path", "format", "eval_path", "split", "eval_split") if getattr(cfg, f) != getattr(InMemoryConfig(), f)]
        if unused:
            raise ConfigError(f"data.{unused[0]} does not apply to data given in Python; pass the rows as data= (and eval_data=)")
        if eval_rows and cfg.eval_fraction > 0:
            raise ConfigError("eval_data= and data.eval_fraction are both set; use one way to get evaluation records")
        if cfg.limit is not None:
            rows, eval_rows = rows[: cfg.limit], eval_rows[: cfg.limit]
        train = rows_to_records(rows, cfg)
        evals = rows_to_records(eval_rows, cfg) if eval_rows else []
        if not evals and cfg.eval_fraction > 0:
            train_idx, eval_idx = split_indices(len(train), cfg.eval_fraction, cfg.seed)
            train, evals = [train[i] for i in train_idx], [train[i] for i in eval_idx]
        self._splits = {"train": train, "eval": evals}

    def records(self, split: str) -> list[Record]:
        if split not in self._splits:
            raise DataError(f"unknown split {split!r}; data sources have 'train' and 'eval'")
        return list(self._splits[split])


def as_rows(data: Any, what: str) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` pairs of a list of dicts or a ``datasets.Dataset``."""
    kind = type(data).__name__
    if kind in ("DatasetDict", "IterableDatasetDict"):
        raise DataError(f"{what} is a {kind} with splits {', '.join(data)}; pass one split, e.g. {what}=ds['train']")
    if kind == "IterableDataset":
        raise DataError(f"{what} is a streaming IterableDataset; load it without streaming=True, or pass list(ds)")
    if isinstance(data, Mapping) or isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise DataError(f"{what} must be a list of dicts (one per row) or a datasets.Dataset, got a {kind}")
    rows = []
    for i, row in enumerate(data, start=1):
        if not isinstance(row, Mapping):
            raise DataError(f"row {i} of {what}: expected a dict of columns ({{'prompt': ...}}), got a {type(row).__name__}")
        rows.append((f"row {i} of {what}", dict(row)))
    if not rows:
        raise DataError(f"{what} holds no rows; give at least one dict with a 'prompt'")
    return rows


# ---------------------------------------------------------------------------------------------
# The plugin that carries the Python inputs of one run
# ---------------------------------------------------------------------------------------------


class RuntimePlugin:
    """Registers the callables and rows given to :func:`train` through the ordinary registration hooks."""

    __name__ = "alignfw.api (given in Python)"  # the origin `python -m alignfw plugins` would show

    def __init__(self) -> None:
        self.rewards: dict[str, Callable[..., Any]] = {}
        self.rows: list[tuple[str, dict[str, Any]]] | None = None
        self.eval_rows: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def register_rewards(self, register) -> None:
        for name, fn in self.rewards.items():
            register(name, _reward_factory(fn, name), config=CallableRewardConfig, description=f"reward function {qualified_name(fn)}")

    @hookimpl
    def register_data_sources(self, register) -> None:
        if self.rows is not None:
            rows, eval_rows = self.rows, self.eval_rows
            register(
                IN_MEMORY, lambda cfg: InMemorySource(cfg, rows, eval_rows), config=InMemoryConfig,
                description=f"{len(rows)} rows given in Python",
            )  # fmt: skip


def _reward_factory(fn: Callable[..., Any], name: str) -> Callable[[CallableRewardConfig], CallableReward]:
    return lambda cfg: CallableReward(fn, name)


def _reward_name(fn: Callable[..., Any], index: int, taken: set[str], installed: list[str]) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if not name.replace("_", "").isalnum():  # a lambda, a partial
        name = f"reward_{index}"
    if name in installed:
        raise ConfigError(
            f"reward function {qualified_name(fn)} has the name of the installed reward {name!r}; rename the function "
            "(its name is what its scores are logged under: reward/<name>)"
        )
    base, k = name, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


# ---------------------------------------------------------------------------------------------
# Composing the config
# ---------------------------------------------------------------------------------------------


def _registration_of(registry: Any, kind: str, node: Any) -> str:
    """The registered name whose config class is ``type(node)``."""
    names = [r.name for r in registry.all() if r.kind == kind and r.config is type(node)]
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError(f"{type(node).__name__} is not the config class of any installed {kind}; installed: {', '.join(registry.names(kind))}")
    raise ConfigError(f"{type(node).__name__} is the config class of the {kind}s {', '.join(names)}; pass the name and set options with overrides")


def _choice(registry: Any, kind: str, value: Any, what: str) -> tuple[str | None, Any]:
    """``(name, node)`` for a group given as a name or as a config dataclass instance."""
    if value is None or isinstance(value, str):
        return value, None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _registration_of(registry, kind, value), value
    raise ConfigError(f"{what}= takes a registered name (str) or a config dataclass instance, got a {type(value).__name__}")


def _plan_rewards(plugin: RuntimePlugin, registry: Any, reward: Any, weights: Sequence[float] | None) -> tuple[str | None, Any, list[dict]]:
    """The reward group to select, a node to set (a config dataclass) and the ``combine`` components."""
    if reward is None:
        if weights is not None:
            raise ConfigError("reward_weights= was given without reward=")
        return None, None, []
    items = list(reward) if isinstance(reward, (list, tuple)) else [reward]
    single = len(items) == 1 and not callable(items[0]) and weights is None
    if single:
        name, node = _choice(registry, "reward", items[0], "reward")
        return name, node, []
    if not items:
        raise ConfigError("reward= is an empty list; give a reward name, a function, or a list of them")
    if weights is not None and len(weights) != len(items):
        raise ConfigError(f"reward_weights= has {len(weights)} weights for {len(items)} rewards; give one weight per reward")
    installed = registry.names("reward")
    components = []
    for i, item in enumerate(items):
        weight = float(weights[i]) if weights is not None else 1.0
        if callable(item) and not isinstance(item, type):
            name = _reward_name(item, i, set(plugin.rewards), installed)
            plugin.rewards[name] = item
            components.append({"name": name, "weight": weight, "options": {}})
        else:
            name, node = _choice(registry, "reward", item, f"reward[{i}]")
            options = {f.name: getattr(node, f.name) for f in dataclasses.fields(node) if f.name != NAME_KEY} if node is not None else {}
            registry.get("reward", name)  # an unknown name fails here, listing the installed ones
            components.append({"name": name, "weight": weight, "options": options})
    return "combine", None, components


def _apply_overrides(cfg: Any, overrides: Mapping[str, Any]) -> None:
    """Set dotted keys (``{"run.steps": 3, "algo": {"lr": 1e-3}}``) on the composed config, type-checked."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    from alignfw.cli import unknown_option_message

    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"override keys are dotted option names like 'run.steps', got {key!r}")
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except (ConfigAttributeError, ConfigKeyError):
            raise ConfigError(unknown_option_message(cfg, key)) from None
        except OmegaConfBaseException as e:
            raise ConfigError(f"{key}={value!r}: {str(e).splitlines()[0]}") from None


def compose_config(
    algo: str | Any,
    *,
    reward: RewardSpec | Sequence[RewardSpec] | None = None,
    reward_weights: Sequence[float] | None = None,
    model: str | Any | None = None,
    data: str | Any | None = None,
    eval_data: Any = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    _plugin: RuntimePlugin | None = None,
) -> tuple[AlignfwConfig, dict[str, Any]]:
    """The typed config :func:`train` runs, and its resolved plain-dict form (``config.yaml``).

    Takes the arguments of :func:`train` (except ``output_dir``). Rewards or data given in Python
    are registered for the caller's plugin manager (see :func:`train`, which unregisters them).
    """
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from alignfw._hydra import register_plugin_configs
    from alignfw.cli import check_overrides, normalize_overrides
    from alignfw.registry import get_plugin_manager, get_registry, set_plugin_manager

    plugin = _plugin if _plugin is not None else RuntimePlugin()
    registry = get_registry()
    algo_name, algo_node = _choice(registry, "algorithm", algo, "algo")
    if algo_name is None:
        raise ConfigError(f"train() needs an algorithm: algo=<name> (installed: {', '.join(registry.names('algorithm'))})")
    model_name, model_node = _choice(registry, "model", model, "model")
    reward_name, reward_node, components = _plan_rewards(plugin, registry, reward, reward_weights)
    data_name, data_node = (None, None)
    if isinstance(data, str) or data is None or (dataclasses.is_dataclass(data) and not isinstance(data, type)):
        if eval_data is not None:
            raise ConfigError("eval_data= goes with data given in Python (a list of dicts or a datasets.Dataset)")
        data_name, data_node = _choice(registry, "data", data, "data")
    else:
        plugin.rows = as_rows(data, "data")
        plugin.eval_rows = as_rows(eval_data, "eval_data") if eval_data is not None else []
        data_name = IN_MEMORY
    pm = get_plugin_manager()
    if (plugin.rewards or plugin.rows is not None) and not pm.is_registered(plugin):
        pm.register(plugin, name=RuntimePlugin.__name__)
        registry = set_plugin_manager(pm)
    register_plugin_configs(registry)

    strings = [o for o in overrides] if isinstance(overrides, (list, tuple)) else []
    mapping = overrides if isinstance(overrides, Mapping) else {}
    if overrides is not None and not strings and not mapping and not isinstance(overrides, (list, tuple, Mapping)):
        raise ConfigError(f"overrides= takes a list of 'key=value' strings or a dict of option -> value, got a {type(overrides).__name__}")
    groups = [f"algo={algo_name}"] + [f"{g}={n}" for g, n in (("model", model_name), ("data", data_name), ("reward", reward_name)) if n]
    outer = GlobalHydra.instance().hydra  # called from the caller's own Hydra app: put its state back afterwards
    GlobalHydra.instance().clear()
    try:
        # a misspelled key fails naming the closest options, whether written key= or +key= (as on the command line)
        cli_overrides = check_overrides(groups + normalize_overrides([str(s) for s in strings]))
        with hydra.initialize_config_module(config_module="alignfw.conf", version_base="1.3"):
            cfg = hydra.compose("config", overrides=cli_overrides)
    except OmegaConfBaseException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    except Exception as e:  # Hydra's own errors (an unknown group option, a bad override string)
        if type(e).__module__.startswith("hydra"):
            raise ConfigError(str(e).splitlines()[0]) from None
        raise
    finally:
        GlobalHydra.instance().clear()
        GlobalHydra.instance().hydra = outer
    for key, node in (("algo", algo_node), ("model", model_node), ("data", data_node), ("reward", reward_node)):
        if node is not None:  # a config object is the whole node, as given (the preset's values for it do not apply)
            _set_node(cfg, key, node)
    if components:
        _apply_overrides(cfg, {"reward.components": components})
    _apply_overrides(cfg, mapping)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required option{'s' if len(missing) > 1 else ''} {', '.join(missing)}: set them in overrides=")
    try:
        resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    return typed, resolved  # type: ignore[return-value]


def _set_node(cfg: Any, key: str, node: Any) -> None:
    """Replace the ``key`` node by a config object, recording the registered name as Hydra does."""
    from omegaconf import OmegaConf

    from alignfw._hydra import named_config

    values = {f.name: getattr(node, f.name) for f in dataclasses.fields(node) if f.name != NAME_KEY}
    cfg[key] = OmegaConf.structured(named_config(type(node), cfg[key][NAME_KEY])(**values))


def train(
    algo: str | Any,
    *,
    reward: RewardSpec | Sequence[RewardSpec] | None = None,
    reward_weights: Sequence[float] | None = None,
    model: str | Any | None = None,
    data: str | Any | None = None,
    eval_data: Any = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train with the options of ``python -m alignfw``; returns the run summary (``summary.json``).

    Args:
        algo: An algorithm name (``"ppo"``, ``"grpo"``, ``"dpo"``, ...) or its config dataclass
            (``GRPOConfig(lr=1e-3)``: the whole ``algo`` node, as given).
        reward: A registered reward name (``"bleu"``), a reward config dataclass, a function
            ``f(prompts, completions, **columns) -> list[float]``, or a list of these (fused by the
            ``combine`` reward, each logged as ``reward/<name>``, a function under its ``__name__``).
        reward_weights: One weight per reward in ``reward`` (default 1.0 each).
        model: A model name (default ``tiny``, the built-in demo model) or its config dataclass; a
            Hugging Face model is ``model="hf_causal_lm", overrides={"model.path": "Qwen/..."}``.
        data: A data source name (default ``tiny_task``) or its config dataclass, or the rows
            themselves: a list of dicts or a ``datasets.Dataset`` (columns as in the file sources:
            ``prompt``, ``completion``/``response``, ``chosen``/``rejected``, ...; every other column
            reaches reward functions as a keyword list).
        eval_data: Held-out rows for evaluation, with ``data`` given as rows (or set
            ``data.eval_fraction`` in ``overrides``).
        overrides: Command-line overrides (``["run.steps=50", "algo.lr=1e-3"]``) or a dict of dotted
            option -> value (``{"run.steps": 50, "rollout": {"max_new_tokens": 32}}``), applied last.
        output_dir: The run directory (default ``run.output_dir``, else ``outputs/<date>/<time>``
            under the working directory, as the command line).

    Returns:
        The summary: ``steps``, ``start`` and ``final`` held-out metrics, ``run_dir``, ...

    Raises:
        alignfw.exceptions.AlignfwError: A bad option, data row or reward (a reward function's
            error is a :class:`~alignfw.exceptions.RewardFunctionError` naming ``module.qualname``).
    """
    from alignfw import pipeline
    from alignfw.cli import _quiet_libraries
    from alignfw.registry import get_plugin_manager, set_plugin_manager

    plugin = RuntimePlugin()
    try:
        cfg, resolved = compose_config(
            algo, reward=reward, reward_weights=reward_weights, model=model, data=data, eval_data=eval_data,
            overrides=overrides, _plugin=plugin,
        )  # fmt: skip
        _quiet_libraries()
        run_dir = output_dir or cfg.run.output_dir or Path("outputs") / datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        return pipeline.run(cfg, Path(run_dir), resolved)
    finally:
        pm = get_plugin_manager()
        if pm.is_registered(plugin):
            pm.unregister(plugin)
            set_plugin_manager(pm)

