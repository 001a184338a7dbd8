"""Hydra wiring: every registered plugin config goes into the ConfigStore under its kind's group.

For a plugin ``bleu`` of kind reward, the ConfigStore gets ``reward/bleu`` (what ``+reward=bleu``
selects) and ``reward/bleu_schema`` (what a YAML preset in ``conf/reward/`` extends with
``defaults: [bleu_schema, _self_]``). The stored node is the plugin's dataclass plus one field,
``_name_``, recording which registration built it, so presets can have any name.
"""

from __future__ import annotations

import dataclasses

from hydra.core.config_store import ConfigStore

from alignfw.config import NAME_KEY, AlignfwConfig
from alignfw.registry import Registry

__all__ = ["register_plugin_configs", "named_config"]


def named_config(cls: type, name: str) -> type:
    """A subclass of the plugin's config dataclass with ``_name_ = name`` (same class name, so
    Hydra's messages read "Key 'max_ordr' not in 'BleuConfig'")."""
    return dataclasses.make_dataclass(
        cls.__name__, [(NAME_KEY, str, dataclasses.field(default=name))], bases=(cls,), namespace={"__module__": cls.__module__}
    )


def register_plugin_configs(registry: Registry) -> None:
    cs = ConfigStore.instance()
    cs.store(name="alignfw_schema", node=AlignfwConfig)
    for reg in registry.all():
        node = named_config(reg.config, reg.name)
        cs.store(group=reg.group, name=reg.name, node=node, provider=reg.origin)
        cs.store(group=reg.group, name=f"{reg.name}_schema", node=node, provider=reg.origin)
