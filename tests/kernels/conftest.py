"""Run the Triton kernels on CPU through Triton's interpreter when there is no GPU.

``triton.jit`` decides at decoration time whether a kernel is compiled or interpreted, so the switch
must be on before ``alignfw.kernels.fused_*`` is first imported: ``tests/conftest.py`` (loaded
before any test module) sets ``TRITON_INTERPRET=1`` when there is no GPU. If the kernel modules
were imported without it, :func:`triton_ready` fails with a message saying so.
"""

from __future__ import annotations

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device() -> str:
    """Where the kernel tests run: CUDA when present, else CPU under the interpreter."""
    return DEVICE


@pytest.fixture
def triton_ready() -> None:
    """Fail (not skip) when the kernels cannot run here: a skip would hide them from CI."""
    from alignfw.kernels import fused_attention, fused_logprob

    for module in (fused_logprob, fused_attention):
        if not module.HAS_TRITON:
            pytest.fail("triton is not installed; tests/kernels needs it (pip install 'alignfw[gpu]')")
        if DEVICE == "cpu" and not module._interpreting():
            pytest.fail(
                f"{module.__name__} was imported before TRITON_INTERPRET=1 was set; run tests/kernels in its "
                "own pytest process or export TRITON_INTERPRET=1"
            )
