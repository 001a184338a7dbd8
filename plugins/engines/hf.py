"""The default generation engine, ``rollout.engine=hf``: the policy's own ``generate``
(Hugging Face ``transformers``). The trainer's network samples, so no weights are synced and the
samples are exactly on-policy. The engine lives in :mod:`alignfw.engines`; this module registers it.
"""

from __future__ import annotations

from alignfw.engines import HFEngine, HFEngineConfig
from alignfw.hookspecs import hookimpl


@hookimpl
def register_engines(register):
    register("hf", HFEngine, config=HFEngineConfig, description="the policy's own generate (transformers); the default")
