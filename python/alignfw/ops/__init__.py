"""The one door to fast code.

Each op has a plain-torch reference (the definition of correctness) and faster paths chosen by
device and availability: Rust (``alignfw._native``) on CPU arrays, Triton on CUDA.
"""

from alignfw.ops.gae import gae, reference_gae

__all__ = ["gae", "reference_gae"]
