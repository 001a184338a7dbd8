"""Property tests of the declared option ranges (``alignfw.config.option``).

For every option of every built-in plugin and of the top-level config that declares a range, random
values outside it are rejected by ``validate_options`` with a message naming the key, the value and
the range, and random values inside it pass. Random command-line overrides drawn from the schemas
(any type, in or out of range, unknown keys) end in a result or in an error the command line
reports as one line (Hydra's own or a ``ConfigError``), never in another exception.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignfw.config import AlignfwConfig, OptionRange, option, option_range, validate_options
from alignfw.exceptions import ConfigError

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def declared(config: type, prefix: str = "") -> list[tuple[str, str, OptionRange]]:
    """``(key, type name, range)`` of every option with a declared range, nested dataclasses included."""
    out = []
    for f in dataclasses.fields(config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            out += declared(type(default), f"{prefix}{f.name}.")
        elif option_range(f) is not None:
            out.append((prefix + f.name, str(f.type), option_range(f)))
    return out


def all_options(registry) -> list[tuple[type, str, str, str, OptionRange]]:
    """``(config class, group prefix, key, type, range)`` over AlignfwConfig and every plugin."""
    out = [(AlignfwConfig, "", k, t, r) for k, t, r in declared(AlignfwConfig)]
    for reg in registry.all():
        out += [(reg.config, f"{reg.group}.", k, t, r) for k, t, r in declared(reg.config)]
    return out


def outside(rng: OptionRange, integer: bool) -> st.SearchStrategy:
    if rng.choices is not None:
        return st.one_of(st.text(max_size=12), st.integers()).filter(lambda v: v not in rng.choices)
    num = st.integers if integer else (lambda **k: st.floats(allow_nan=False, allow_infinity=False, **k))
    parts = []
    if rng.ge is not None:
        parts.append(num(max_value=math.ceil(rng.ge) - 1) if integer else num(max_value=rng.ge, exclude_max=True))
    if rng.gt is not None:
        parts.append(num(max_value=math.floor(rng.gt)) if integer else num(max_value=rng.gt))
    if rng.le is not None:
        parts.append(num(min_value=math.floor(rng.le) + 1) if integer else num(min_value=rng.le, exclude_min=True))
    if rng.lt is not None:
        parts.append(num(min_value=math.ceil(rng.lt)) if integer else num(min_value=rng.lt))
    if not integer:
        parts.append(st.just(float("nan")))
    return st.one_of(parts)


def inside(rng: OptionRange, integer: bool) -> st.SearchStrategy:
    if rng.choices is not None:
        return st.sampled_from(rng.choices)
    lo = rng.ge if rng.ge is not None else rng.gt
    hi = rng.le if rng.le is not None else rng.lt
    if integer:
        lo_i = None if lo is None else (math.ceil(lo) if rng.gt is None else math.floor(lo) + 1)
        hi_i = None if hi is None else (math.floor(hi) if rng.lt is None else math.ceil(hi) - 1)
        return st.integers(min_value=lo_i, max_value=hi_i)
    return st.floats(min_value=lo, max_value=hi, exclude_min=rng.gt is not None, exclude_max=rng.lt is not None, allow_nan=False, allow_infinity=False)


def with_value(config: type, key: str, value):
    obj = config()
    *outer, last = key.split(".")
    node = obj
    for name in outer:
        node = getattr(node, name)
    setattr(node, last, value)
    return obj


def test_every_builtin_plugin_declares_ranges(builtin_plugins):
    """Each plugin kind's built-ins use option(); a plugin that lost its ranges would go unchecked."""
    declared_by = {reg.name for reg in builtin_plugins.all() if declared(reg.config)}
    assert {"ppo", "grpo", "rloo", "reinforce", "dpo", "sft", "sft_ranking", "reward_model", "bleu", "feedback", "hf_causal_lm", "tiny_task", "jsonl"} <= declared_by
    keys = {k for k, _, _ in declared(AlignfwConfig)}
    assert {"run.steps", "run.batch_size", "rollout.max_new_tokens", "rollout.top_p", "distributed.strategy", "threads"} <= keys


@SETTINGS
@given(data=st.data())
def test_values_outside_a_declared_range_are_rejected_and_inside_pass(builtin_plugins, data):
    config, prefix, key, tname, rng = data.draw(st.sampled_from(all_options(builtin_plugins)))
    integer = tname.startswith("int")
    bad = data.draw(outside(rng, integer))
    with pytest.raises(ConfigError) as e:
        validate_options(with_value(config, key, bad), prefix)
    assert f"{prefix}{key}={bad!r} " in str(e.value) and rng.describe() in str(e.value)
    validate_options(with_value(config, key, data.draw(inside(rng, integer))), prefix)


def test_none_and_defaults_pass(builtin_plugins):
    validate_options(AlignfwConfig())
    for reg in builtin_plugins.all():
        validate_options(reg.config(), f"{reg.group}.")


def test_option_helper_for_third_party_plugins():
    @dataclasses.dataclass
    class Cfg:
        threshold: float = option(0.5, ge=0, le=1, doc="score above which a response counts")
        mode: str = option("fast", choices=("fast", "exact"))
        tags: list = option(default_factory=list)

    f = {x.name: x for x in dataclasses.fields(Cfg)}
    assert f["threshold"].metadata["doc"] == "score above which a response counts"
    assert option_range(f["tags"]) is None and Cfg().tags == []
    with pytest.raises(ConfigError, match=r"reward\.threshold=1\.5 is out of range: must be >= 0 and <= 1; reward\.mode='slow' is not a valid choice"):
        validate_options(Cfg(threshold=1.5, mode="slow"), "reward.")
    with pytest.raises(TypeError):
        option(1, ge=0, choices=(1, 2))


# -- random command-line overrides ----------------------------------------------------------------

def override_values() -> st.SearchStrategy:
    text = st.text(alphabet=st.characters(codec="ascii", categories=["L", "N"]), max_size=8)
    return st.one_of(
        st.integers(min_value=-10**6, max_value=10**6).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        text,
        st.sampled_from(["null", "true", "[]", "{}", "''"]),
    )


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_overrides_end_in_a_config_or_a_reported_error(hydra_compose, builtin_plugins, data):
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from alignfw.registry import config_options

    reg = data.draw(st.sampled_from(list(builtin_plugins.all())))  # the plugin whose schema the overrides come from
    select = {"algo": f"+algo={reg.name}", "reward": f"+reward={reg.name}", "model": f"model={reg.name}", "data": f"data={reg.name}"}
    defaults = (("algo", "+algo=ppo"), ("reward", "+reward=bleu"), ("model", "model=tiny"), ("data", "data=tiny_task"))
    base = [select[g] if g == reg.group else d for g, d in defaults]
    keys = [k for k, *_ in config_options(AlignfwConfig) if k.split(".")[0] not in ("model", "data", "reward", "algo")]
    keys += [f"{reg.group}.{k}" for k, *_ in config_options(reg.config)]
    keys += ["run.stpes", f"{reg.group}.no_such_option"]  # unknown keys
    overrides = [f"{data.draw(st.sampled_from(keys))}={data.draw(override_values())}" for _ in range(data.draw(st.integers(1, 3)))]
    def typed(*ov):  # as the command line does it: missing values first, then the objects, then the ranges
        cfg = hydra_compose(*ov)
        if OmegaConf.missing_keys(cfg):
            raise ConfigError(f"missing {sorted(OmegaConf.missing_keys(cfg))}")
        validate_options(OmegaConf.to_object(cfg))

    if reg.name != "reward_model":  # the plugin's defaults compose and validate (reward_model needs reward.path)
        typed(*base)
    try:
        typed(*base, *overrides)
    except (ConfigError, HydraException, OmegaConfBaseException):
        pass  # the command line prints these as one line: Hydra's own errors, or "alignfw: error: ..."


def test_a_combined_reward_names_its_component_option(builtin_plugins):
    from alignfw.plugins.rewards.combine import CombineConfig, Component
    from alignfw.registry import BuildContext

    cfg = CombineConfig(components=[Component(name="bleu", options={}), Component(name="bleu", options={"max_order": 0})])
    with pytest.raises(ConfigError, match=r"reward\.components\[1\]\.options\.max_order=0 is out of range: must be >= 1"):
        builtin_plugins.get("reward", "combine").build(cfg, BuildContext(builtin_plugins))
