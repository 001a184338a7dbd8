"""alignfw: align language models with human and AI feedback.

The package imports nothing heavy (no torch, no Hydra) so that ``import alignfw`` and the CLI's
``--help`` stay fast; each submodule imports what it needs.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alignfw")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
