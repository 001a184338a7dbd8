"""The exception hierarchy of alignfw.

Every error alignfw raises on purpose derives from :class:`AlignfwError`, so a caller can catch
them all at once, and each message names the problem and the fix. The classes are created in
Rust (``alignfw._native``) so that Rust and Python raise the very same types.
"""

from __future__ import annotations

from alignfw._native import AlignfwError, InvalidInputError, TokenizerError, TokenizerFormatError


class ConfigError(AlignfwError):
    """A configuration value is missing, misspelled or out of range."""


class PluginError(AlignfwError):
    """A plugin failed to load or register (duplicate name, missing config class, bad hook)."""


class UnknownNameError(ConfigError):
    """A plugin name (``+algo=...``, ``+reward=...``) that no installed plugin registered."""


class DataError(AlignfwError):
    """A data file is missing, empty or has a malformed row."""


class CheckpointError(AlignfwError):
    """A checkpoint is missing, truncated or does not match the run being resumed."""


class TrainingError(AlignfwError):
    """Training cannot go on (a NaN reward or loss, a diverged policy)."""


class RewardFunctionError(TrainingError):
    """A reward function given in Python raised, or returned something other than one finite float
    per completion; the message names the function as ``module.qualname``."""


__all__ = [
    "AlignfwError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InvalidInputError",
    "PluginError",
    "RewardFunctionError",
    "TokenizerError",
    "TokenizerFormatError",
    "TrainingError",
    "UnknownNameError",
]
