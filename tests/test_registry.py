"""The plugin host: discovery, registration errors, unknown names."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from alignfw.exceptions import PluginError, UnknownNameError
from alignfw.hookspecs import hookimpl
from alignfw.registry import collect, get_registry, plugin_manager, unknown_name_message


@dataclass
class Cfg:
    x: int = 1


class RewardA:
    @hookimpl
    def register_rewards(self, register):
        register("same", lambda cfg: (lambda p, r, recs: [0.0] * len(p)), config=Cfg)


class RewardB:
    @hookimpl
    def register_rewards(self, register):
        register("same", lambda cfg: None, config=Cfg)


def test_duplicate_names_name_both_plugins(use_plugins):
    with pytest.raises(PluginError, match=r"two plugins register the reward 'same'.*RewardA|two plugins.*RewardB"):
        use_plugins(RewardA(), RewardB())


def test_missing_config_class_is_an_error(use_plugins):
    class NoConfig:
        @hookimpl
        def register_rewards(self, register):
            register("nocfg", lambda cfg: None)

    with pytest.raises(PluginError, match="without a config class"):
        use_plugins(NoConfig())


def test_config_must_be_a_dataclass(use_plugins):
    class NotDC:
        @hookimpl
        def register_algorithms(self, register):
            register("bad", lambda cfg: None, config=dict)

    with pytest.raises(PluginError, match="not a dataclass"):
        use_plugins(NotDC())


def test_misspelled_hookimpl_fails_at_startup():
    class Typo:
        @hookimpl
        def register_reward(self, register):  # missing the final s
            pass

    with pytest.raises(PluginError, match="register_reward"):
        plugin_manager([Typo()])


def test_wrong_hook_arguments_fail_at_startup():
    class BadArgs:
        @hookimpl
        def register_rewards(self, register, extra):
            pass

    with pytest.raises(Exception, match="extra"):
        plugin_manager([BadArgs()])


def test_unknown_name_lists_what_exists(use_plugins):
    reg = use_plugins(RewardA())
    with pytest.raises(UnknownNameError) as e:
        reg.get("reward", "sam")
    msg = str(e.value)
    assert "unknown reward 'sam'" in msg and "same" in msg and "Did you mean +reward=same" in msg


def test_unknown_name_message_with_nothing_installed():
    assert "(none installed)" in unknown_name_message("algorithm", "ppo", [])


def test_builtins_are_discovered_through_entry_points(monkeypatch):
    monkeypatch.delenv("ALIGNFW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    reg = collect(plugin_manager())
    for kind, name in [("reward", "bleu"), ("algorithm", "ppo"), ("model", "hf_causal_lm"), ("data", "tiny_task")]:
        r = reg.get(kind, name)
        assert r.origin.startswith("alignfw ") and r.origin.endswith("(built-in)"), r.origin


def test_alignfw_plugins_filters_distributions(monkeypatch):
    monkeypatch.delenv("ALIGNFW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setenv("ALIGNFW_PLUGINS", "some-other-dist")
    reg = collect(plugin_manager())
    assert reg.names("reward") == []


def test_options_listing(builtin_plugins):
    opts = dict((n, d) for n, _, d in builtin_plugins.get("algorithm", "ppo").options())
    assert opts["clip_range"] == 0.2 and "lr" in opts


def test_get_registry_is_cached(builtin_plugins):
    assert get_registry() is builtin_plugins
