"""alignfw: align language models with human and AI feedback.

The package imports nothing heavy (no torch, no Hydra) so that ``import alignfw`` and the CLI's
``--help`` stay fast; each submodule imports what it needs.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alignfw.api import compose_config, train

try:
    __version__ = version("alignfw")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "compose_config", "train"]


def __getattr__(name: str):
    """``alignfw.train`` and ``alignfw.compose_config`` (:mod:`alignfw.api`), imported on first use."""
    if name in ("train", "compose_config"):
        from alignfw import api

        return getattr(api, name)
    raise AttributeError(f"module 'alignfw' has no attribute {name!r}")
