"""The one door to fast code.

Each op has a plain-torch reference (the definition of correctness) and faster paths chosen by
device and availability: Rust (``alignfw._native``) on CPU arrays, Triton on CUDA.
"""

from alignfw.ops.gae import gae, reference_gae
from alignfw.ops.logprobs import logprobs_from_hidden, logprobs_from_logits

__all__ = ["gae", "logprobs_from_hidden", "logprobs_from_logits", "reference_gae"]
