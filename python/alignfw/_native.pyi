"""Type stubs of the private Rust extension ``alignfw._native`` (checked by ``mypy.stubtest``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["AlignfwError", "InvalidInputError", "TokenizerError", "TokenizerFormatError", "gae", "gae_into"]

class AlignfwError(Exception): ...
class InvalidInputError(AlignfwError): ...
class TokenizerError(AlignfwError): ...
class TokenizerFormatError(TokenizerError): ...

# --- GAE ---------------------------------------------------------------------------------------

def gae(
    rewards: npt.NDArray[np.float32],
    values: npt.NDArray[np.float32],
    mask: npt.NDArray[np.float32] | None = None,
    *,
    gamma: float,
    lam: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
def gae_into(
    rewards: npt.NDArray[np.float32],
    values: npt.NDArray[np.float32],
    mask: npt.NDArray[np.float32] | None,
    advantages: npt.NDArray[np.float32],
    returns: npt.NDArray[np.float32],
    *,
    gamma: float,
    lam: float,
) -> None: ...

# --- BPE tokenizer -----------------------------------------------------------------------------
