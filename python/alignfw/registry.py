"""The plugin host: one pluggy manager, one registry of components, one place that fails loudly.

Plugins are found through the ``alignfw`` entry-point group, alignfw's built-ins included, so every
run exercises the third-party discovery path. Environment switches (pytest / llm / datasette style):

- ``ALIGNFW_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (tests register plugins by hand);
- ``ALIGNFW_PLUGINS=a,b``: load only the entry points of these distributions (``alignfw`` is the
  built-ins);
- ``ALIGNFW_TRACE_PLUGINS=1``: print every hook call and its result.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import pluggy

from alignfw import hookspecs
from alignfw.config import DistributedConfig, RolloutConfig, RunConfig, option_range, validate_options
from alignfw.exceptions import AlignfwError, PluginError, UnknownNameError

if TYPE_CHECKING:
    import torch

    from alignfw.models import PolicyModel

__all__ = [
    "KINDS",
    "BuildContext",
    "GuardedReward",
    "Register",
    "Registration",
    "Registry",
    "config_options",
    "get_registry",
    "plugin_manager",
]

#: plugin kind -> (registration hook, Hydra group, how a user selects it)
KINDS: dict[str, tuple[str, str, str]] = {
    "model": ("register_models", "model", "model={}"),
    "reward": ("register_rewards", "reward", "+reward={}"),
    "algorithm": ("register_algorithms", "algo", "+algo={}"),
    "data": ("register_data_sources", "data", "data={}"),
    "engine": ("register_engines", "rollout/engine", "rollout.engine={}"),
}


@dataclass(frozen=True)
class Registration:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config: type
    plugin: str  #: the plugin's name in the manager (entry-point name or module name)
    origin: str  #: "alignfw 0.1.0 (built-in)", "alignfw-toxicity 1.2", or a module path
    description: str = ""

    @property
    def group(self) -> str:
        return KINDS[self.kind][1]

    def options(self) -> list[tuple[str, str, Any]]:
        """``(field, type, default)`` for each option of the config dataclass; the fields of a nested
        dataclass option are listed one by one as ``outer.inner`` (``lora.r``)."""
        return [(name, tname, default) for name, tname, default, _ in config_options(self.config)]

    def ranges(self) -> dict[str, str]:
        """``{field: "in range"}`` for each option declared with :func:`alignfw.config.option`
        (``{"clip_range": "> 0", "lora.r": ">= 1"}``)."""
        return {name: rng for name, _, _, rng in config_options(self.config) if rng}

    def describe(self) -> str:
        """``reward 'bleu' (plugin 'bleu' from alignfw 0.1.0 (built-in), factory alignfw.plugins.rewards.bleu.BleuReward)``:
        who to ask when it fails (the plugin is its entry point's name for an installed distribution)."""
        factory = f"{getattr(self.factory, '__module__', '?')}.{getattr(self.factory, '__qualname__', repr(self.factory))}"
        return f"{self.kind} {self.name!r} (plugin {self.plugin!r} from {self.origin}, factory {factory})"

    def build(self, cfg: Any, ctx: BuildContext | None = None) -> Any:
        """Check the config's declared ranges, then call the factory with it (and with ``ctx`` if it
        asks for one). An exception that is not an :class:`AlignfwError` (or a file system error)
        becomes a :class:`PluginError` naming the plugin."""
        if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
            validate_options(cfg, f"{self.group}.")
        try:
            takes_ctx = "ctx" in inspect.signature(self.factory).parameters
        except (TypeError, ValueError):  # builtins without a signature
            takes_ctx = False
        try:
            return self.factory(cfg, ctx=ctx) if takes_ctx else self.factory(cfg)
        except (AlignfwError, OSError):
            raise
        except Exception as e:
            raise PluginError(f"{self.describe()} failed to build: {type(e).__name__}: {e}; fix the plugin or its options") from e


class GuardedReward:
    """A built reward with a boundary: an exception or a malformed result names the plugin.

    The wrapped reward's attributes stay reachable (``guarded.last_components``).
    """

    def __init__(self, fn: Callable[..., Any], reg: Registration) -> None:
        self.fn, self.registration = fn, reg

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fn, name)

    def __call__(self, prompts: list[str], responses: list[str], records: Any) -> Any:
        who = self.registration.describe()
        try:
            out = self.fn(prompts, responses, records)
        except AlignfwError:
            raise
        except Exception as e:
            raise PluginError(f"{who} raised {type(e).__name__}: {e}; fix the reward (a reward returns one float per response)") from e
        shape = "a list of floats or a 1-D tensor"
        if out is None:
            raise PluginError(f"{who} returned None for {len(responses)} responses; a reward must return one score per response ({shape})")
        try:
            n = len(out)
        except TypeError:
            raise PluginError(f"{who} returned a {type(out).__name__}, not one score per response ({shape})") from None
        if n != len(responses):
            raise PluginError(f"{who} returned {n} scores for {len(responses)} responses; a reward must return one score per response ({shape})")
        return out


def config_options(config: Any, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """``(field, type, default, range)``; range is "" when none is declared."""
    out: list[tuple[str, str, Any, str]] = []
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "???"
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            out += config_options(type(default), f"{prefix}{f.name}.")
            continue
        tname = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rng = option_range(f)
        out.append((prefix + f.name, tname, default, rng.describe() if rng else ""))
    return out


@dataclass
class BuildContext:
    """What a factory may need besides its own config; the pipeline fills it in as it builds the
    components, in this order: data, model, reward, algorithm (each sees those built before it)."""

    registry: Registry
    device: torch.device | None = None  #: where models go (the pipeline sets it; None: CPU)
    run_dir: str | None = None
    seed: int = 0
    run: RunConfig = field(default_factory=RunConfig)  #: steps, batch size, evaluation and saving
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  #: sampling of online algorithms
    distributed: DistributedConfig = field(default_factory=DistributedConfig)  #: strategy under torchrun
    data: Any = None  #: the data source (``records(split)``)
    model: PolicyModel | None = None
    reward: Callable[..., Any] | None = None  #: None when no ``+reward=`` was chosen


class Registry:
    """Components by kind and name, filled by the registration hooks."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Registration]] = {k: {} for k in KINDS}

    def add(self, reg: Registration) -> None:
        if not dataclasses.is_dataclass(reg.config):
            raise PluginError(
                f"plugin {reg.plugin!r} ({reg.origin}) registered {reg.kind} {reg.name!r} with config={reg.config!r}, "
                "which is not a dataclass; pass config=<a @dataclass whose fields are the options>"
            )
        if not callable(reg.factory):
            raise PluginError(f"plugin {reg.plugin!r} ({reg.origin}) registered {reg.kind} {reg.name!r} with a factory that is not callable")
        if not reg.name or not reg.name.replace("_", "").replace("-", "").isalnum():
            raise PluginError(
                f"plugin {reg.plugin!r} ({reg.origin}) registered a {reg.kind} named {reg.name!r}; "
                "names are letters, digits, '_' and '-'"
            )
        existing = self._items[reg.kind].get(reg.name)
        if existing is not None:
            raise PluginError(
                f"two plugins register the {reg.kind} {reg.name!r}: {existing.plugin!r} ({existing.origin}) and "
                f"{reg.plugin!r} ({reg.origin}); uninstall one or set ALIGNFW_PLUGINS to the distributions to load"
            )
        self._items[reg.kind][reg.name] = reg

    def get(self, kind: str, name: str) -> Registration:
        try:
            return self._items[kind][name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(kind, name, self.names(kind))) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def all(self) -> Iterable[Registration]:
        for kind in KINDS:
            yield from (self._items[kind][n] for n in sorted(self._items[kind]))


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    import difflib

    how = KINDS[kind][2]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {how.format(close[0])}?" if close else ""
    listed = ", ".join(known) if known else "(none installed)"
    return (
        f"unknown {kind} {name!r}. Installed {kind}s: {listed}.{hint} "
        f"Run `python -m alignfw plugins` to see every plugin and its options."
    )


class Register:
    """The ``register`` callable a registration hook receives for one plugin and one kind."""

    def __init__(self, registry: Registry, kind: str, plugin: str, origin: str) -> None:
        self._registry, self._kind, self._plugin, self._origin = registry, kind, plugin, origin

    def __call__(self, name: str, factory: Callable[..., Any], config: type | None = None, *, description: str | None = None) -> None:
        if config is None:
            raise PluginError(
                f"plugin {self._plugin!r} ({self._origin}) registered {self._kind} {name!r} without a config class; "
                f"call register({name!r}, factory, config=MyConfig) with a dataclass of its options"
            )
        doc = description if description is not None else (inspect.getdoc(factory) or "")
        self._registry.add(
            Registration(self._kind, name, factory, config, self._plugin, self._origin, doc.strip().split("\n")[0])
        )


def plugin_origin(pm: pluggy.PluginManager, plugin: object) -> str:
    """Where ``plugin`` comes from: ``<distribution> <version>`` (``(built-in)`` for alignfw's own)."""
    dist = getattr(pm, "alignfw_origins", {}).get(pm.get_name(plugin))
    if dist is not None:
        name, ver = dist
        return f"{name} {ver}" + (" (built-in)" if name == "alignfw" else "")
    return getattr(plugin, "__name__", repr(plugin))


def plugin_manager(extra_plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """Build the plugin manager: hookspecs, entry points (unless disabled), extra plugin objects."""
    pm = pluggy.PluginManager("alignfw")
    pm.add_hookspecs(hookspecs)
    if not os.environ.get("ALIGNFW_DISABLE_PLUGIN_AUTOLOAD"):
        _load_entrypoints(pm)
    try:
        for p in extra_plugins:
            pm.register(p)
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(f"{e}; hook implementations must be named after a hook in alignfw.hookspecs") from e
    if os.environ.get("ALIGNFW_TRACE_PLUGINS"):
        pm.add_hookcall_monitoring(
            lambda name, impls, kw: print(f"[alignfw] hook {name} -> {[i.plugin_name for i in impls]}", file=sys.stderr),
            lambda outcome, name, impls, kw: None,
        )
    return pm


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    """``pm.load_setuptools_entrypoints`` with ALIGNFW_PLUGINS filtering and a clear error per plugin."""
    from importlib.metadata import distributions

    origins: dict[str, tuple[str, str]] = {}
    pm.alignfw_origins = origins  # type: ignore[attr-defined]
    only = {s.strip() for s in os.environ.get("ALIGNFW_PLUGINS", "").split(",") if s.strip()}
    seen: set[str] = set()
    for dist in distributions():
        dname = dist.metadata["name"]
        if not dname or dname in seen or (only and dname not in only):
            continue
        seen.add(dname)
        for ep in dist.entry_points:
            if ep.group != "alignfw" or pm.is_blocked(ep.name):
                continue
            if pm.get_plugin(ep.name) is not None:
                first = origins.get(ep.name, ("?", "?"))
                raise PluginError(
                    f"two distributions provide an alignfw plugin named {ep.name!r}: {first[0]} {first[1]} and {dname} "
                    f"{dist.version}; entry-point names must be unique (uninstall one, or rename its entry point)"
                )
            try:
                plugin = ep.load()
            except Exception as e:  # a broken third-party plugin must not hide behind a deep traceback
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {dname} {dist.version} failed to import ({ep.value}): "
                    f"{type(e).__name__}: {e}. Fix or uninstall it (pip uninstall {dname}), or set ALIGNFW_PLUGINS "
                    "to the distributions to load."
                ) from e
            try:
                pm.register(plugin, name=ep.name)
            except (ValueError, pluggy.PluginValidationError) as e:
                raise PluginError(f"plugin {ep.name!r} from distribution {dname} {dist.version}: {e}") from e
            origins[ep.name] = (dname, dist.version)


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call every registration hook of every plugin, one plugin at a time so we know who registered what."""
    registry = Registry()
    for kind, (hook_name, _, _) in KINDS.items():
        # pluggy calls last-registered first; registering in load order keeps listings stable.
        for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
            impl.function(register=Register(registry, kind, impl.plugin_name, plugin_origin(pm, impl.plugin)))
    return registry


_REGISTRY: Registry | None = None
_PM: pluggy.PluginManager | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry (built once from :func:`plugin_manager`)."""
    global _REGISTRY, _PM
    if _REGISTRY is None or refresh:
        _PM = plugin_manager()
        _REGISTRY = collect(_PM)
    return _REGISTRY


def get_plugin_manager() -> pluggy.PluginManager:
    get_registry()
    assert _PM is not None
    return _PM


def set_plugin_manager(pm: pluggy.PluginManager) -> Registry:
    """Install a hand-built manager (tests, embedding). Returns its registry."""
    global _REGISTRY, _PM
    _PM, _REGISTRY = pm, collect(pm)
    return _REGISTRY
