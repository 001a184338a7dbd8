"""``alignfw.ops.gae.gae`` (Rust) against two references: ``reference_gae`` (the torch loop in the
package) and, independently, TRL ``PPOTrainer``'s per-timestep loop written out below in plain Python
floats and run on each sequence with its masked steps removed.

Masked steps are skipped (zero advantage and return; the recursion carries over them), so a hole in
the mask must behave as if the step were absent: that is exactly what running TRL's loop on the
compacted sequence computes.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignfw import _native
from alignfw.exceptions import AlignfwError, InvalidInputError
from alignfw.ops.gae import gae, reference_gae

PARALLEL_MIN_ELEMENTS = 1 << 16  # rust/alignfw-core/src/gae.rs: rows go parallel when batch * T >= this


def trl_loop(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """TRL ``PPOTrainer``'s GAE loop for one unpadded sequence (float64); returns the advantages."""
    lastgaelam = 0.0
    advantages_reversed = []
    gen_length = len(rewards)
    for t in reversed(range(gen_length)):
        nextvalues = values[t + 1] if t < gen_length - 1 else 0.0
        delta = rewards[t] + gamma * nextvalues - values[t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    return advantages_reversed[::-1]


def loop_gae(rewards, values, mask, gamma, lam) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's loop per row on the real steps only, scattered back; zeros at masked steps. float64."""
    r, v = rewards.double().tolist(), values.double().tolist()
    m = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask != 0
    adv = torch.zeros(rewards.shape, dtype=torch.float64)
    for i, keep in enumerate(m.tolist()):
        idx = [t for t, k in enumerate(keep) if k]
        a = trl_loop([r[i][t] for t in idx], [v[i][t] for t in idx], gamma, lam)
        adv[i, idx] = torch.tensor(a, dtype=torch.float64)
    ret = torch.where(m, adv + values.double(), torch.zeros((), dtype=torch.float64))
    return adv, ret


def make_mask(kind: str, b: int, t: int, g: torch.Generator) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "right_pad":  # each row real for a random prefix (possibly empty or full)
        lengths = torch.randint(0, t + 1, (b, 1), generator=g)
        return torch.arange(t).expand(b, t) < lengths
    p = torch.rand((), generator=g).item()  # "holes": any pattern, from nearly empty to nearly full
    return torch.rand(b, t, generator=g) < p


def assert_matches_loop(adv, ret, rewards, values, mask, gamma, lam) -> None:
    want_adv, want_ret = loop_gae(rewards, values, mask, gamma, lam)
    # float32 recursion vs float64: a few ulps per step over up to a few hundred steps of values O(1..10).
    torch.testing.assert_close(adv.double(), want_adv, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ret.double(), want_ret, rtol=1e-4, atol=1e-3)


@settings(max_examples=80, deadline=None)
@given(
    b=st.integers(1, 64),
    t=st.integers(0, 300),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    mask_kind=st.sampled_from(["none", "right_pad", "holes"]),
    mask_dtype=st.sampled_from([torch.bool, torch.float32, torch.int64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_references(b, t, gamma, lam, mask_kind, mask_dtype, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.rand(b, t, generator=g) * 2 - 1
    values = torch.rand(b, t, generator=g) * 2 - 1
    mask = make_mask(mask_kind, b, t, g)
    mask = None if mask is None else mask.to(mask_dtype)

    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)

    assert adv.shape == ret.shape == (b, t) and adv.dtype == ret.dtype == torch.float32
    ref_adv, ref_ret = reference_gae(rewards, values, mask, gamma=gamma, lam=lam)
    torch.testing.assert_close(adv, ref_adv, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ret, ref_ret, rtol=1e-5, atol=1e-4)
    assert_matches_loop(adv, ret, rewards, values, mask, gamma, lam)
    if mask is not None:  # masked steps are exactly zero, not merely small
        off = mask == 0
        assert not adv[off].any() and not ret[off].any()


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 24),
    t=st.integers(1, 120),
    dtype=st.sampled_from([torch.float64, torch.bfloat16, torch.float16]),
    layout=st.sampled_from(["transposed", "strided", "row_padded"]),
    masked=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_converts_dtypes_and_layouts(b, t, dtype, layout, masked, seed):
    g = torch.Generator().manual_seed(seed)

    def arrange(x: torch.Tensor) -> torch.Tensor:  # same values, non-contiguous storage
        if layout == "transposed":
            return x.t().contiguous().t()
        if layout == "strided":
            return torch.stack([x, torch.full_like(x, 7)], dim=-1)[..., 0]  # every other element
        return torch.cat([x, torch.full_like(x, 7)], dim=1)[:, :t]  # rows T apart, each 2T long

    rewards = arrange((torch.rand(b, t, generator=g) * 2 - 1).to(dtype))
    values = arrange((torch.rand(b, t, generator=g) * 2 - 1).to(dtype))
    assert not rewards.is_contiguous() or min(b, t) == 1
    mask = arrange(torch.rand(b, t, generator=g) < 0.7) if masked else None

    adv, ret = gae(rewards, values, mask, gamma=0.99, lam=0.95)

    assert adv.dtype == torch.float32 and adv.is_contiguous()
    # The references see the very numbers gae saw: the low-precision inputs, widened.
    assert_matches_loop(adv, ret, rewards.float(), values.float(), mask, 0.99, 0.95)


@pytest.mark.parametrize(
    ("b", "t"),
    [
        (64, PARALLEL_MIN_ELEMENTS // 64),  # exactly at the threshold: parallel
        (63, PARALLEL_MIN_ELEMENTS // 64),  # just below it: serial
        (65, 1100),  # parallel, odd batch (the last row goes alone)
        (3, 22_000),  # parallel over few, long rows
        (1, PARALLEL_MIN_ELEMENTS + 1),  # one row never goes parallel
    ],
)
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_parallel_threshold(b, t, mask_kind):
    g = torch.Generator().manual_seed(b * t)
    rewards = torch.rand(b, t, generator=g) * 2 - 1
    values = torch.rand(b, t, generator=g) * 2 - 1
    mask = make_mask(mask_kind, b, t, g)
    adv, ret = gae(rewards, values, mask, gamma=0.99, lam=0.95)
    assert_matches_loop(adv, ret, rewards, values, mask, 0.99, 0.95)


@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)])
def test_empty(shape):
    adv, ret = gae(torch.zeros(shape), torch.zeros(shape), torch.ones(shape), gamma=1.0, lam=0.95)
    assert adv.shape == ret.shape == shape


def test_hole_is_skipped_and_padding_equals_truncation():
    # A hand-checkable case: the masked step (7.0) must not touch its neighbours.
    rewards = torch.tensor([[1.0, 7.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 7.0, 0.25, 5.0]])
    mask = torch.tensor([[1, 0, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    a2 = 2.0 - 0.25  # last real step: next value 0
    a0 = 1.0 + 0.9 * 0.25 - 0.5 + 0.9 * 0.8 * a2
    torch.testing.assert_close(adv, torch.tensor([[a0, 0.0, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, 0.0, a2 + 0.25, 0.0]]))


def test_native_strided_arrays():
    # The wrapper always hands Rust contiguous arrays; the native function itself also takes strided ones.
    g = np.random.default_rng(0)
    r, v = (g.uniform(-1, 1, (6, 80)).astype(np.float32) for _ in range(2))
    m = (g.uniform(size=(6, 80)) < 0.6).astype(np.float32)
    out = np.zeros((2, 6, 80), np.float32)
    adv, ret = out[0, :, ::2], out[1, :, ::2]
    _native.gae_into(r[:, ::2], v[:, ::2], m[:, ::2], adv, ret, gamma=0.97, lam=0.9)
    tr, tv, tm = (torch.from_numpy(np.ascontiguousarray(x[:, ::2])) for x in (r, v, m))
    assert_matches_loop(torch.from_numpy(adv.copy()), torch.from_numpy(ret.copy()), tr, tv, tm, 0.97, 0.9)
    assert not out[:, :, 1::2].any()  # the elements between the strided outputs are untouched


@pytest.mark.parametrize(
    ("rewards", "values", "mask", "needles"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), None, ["(2, 3)", "(2, 4)"]),
        (torch.zeros(5), torch.zeros(5), None, ["(batch, T)", "(5,)"]),
        (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), None, ["(batch, T)", "(2, 3, 4)"]),
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3, 2), ["mask (3, 2)"]),
    ],
    ids=["shape-mismatch", "1-d", "3-d", "mask-shape"],
)
def test_invalid_input(rewards, values, mask, needles):
    with pytest.raises(InvalidInputError) as e:
        gae(rewards, values, mask)
    assert isinstance(e.value, AlignfwError)
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_native_errors_are_typed():
    # Shape checks also live in Rust (for callers of the native module), raising the same type.
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(InvalidInputError, match=r"outputs \[2, 4\]"):
        _native.gae_into(z, z, None, np.zeros((2, 4), np.float32), z.copy(), gamma=1.0, lam=1.0)
    with pytest.raises(InvalidInputError, match="same"):
        _native.gae_into(z, np.zeros((3, 3), np.float32), None, z.copy(), z.copy(), gamma=1.0, lam=1.0)


def _main_thread_gets_in(work, calls: int) -> bool:
    """Call ``work`` ``calls`` times in a thread; True if this thread got the GIL back before they were done.

    Deterministic, not a timing test: with a switch interval of minutes, CPython never takes the GIL
    from a running thread, so this thread gets back in while the calls are under way only if a call
    releases the GIL itself; otherwise only once the worker thread has exited.
    """
    done = [0]

    def worker():
        for _ in range(calls):
            work()
            done[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(300.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()  # returns once this thread holds the GIL again
        seen = done[0]
        counter = 0
        for _ in range(100_000):  # and it runs Python meanwhile
            counter += 1
        thread.join()
    finally:
        sys.setswitchinterval(old)
    assert counter == 100_000 and done[0] == calls
    return seen < calls


@pytest.mark.skipif(not getattr(sys, "_is_gil_enabled", lambda: True)(), reason="no GIL to release")
def test_gil_is_released():
    g = np.random.default_rng(0)
    r, v = (g.uniform(-1, 1, (512, 2048)).astype(np.float32) for _ in range(2))  # parallel path, ~1 ms a call
    adv, ret = np.empty_like(r), np.empty_like(r)

    # Many calls, so the GIL is free for ~100+ ms in all: this thread needs to wake in one of the gaps.
    assert _main_thread_gets_in(lambda: _native.gae_into(r, v, None, adv, ret, gamma=1.0, lam=0.95), calls=150)
    # The check can fail: pure-Python work keeps the GIL throughout.
    assert not _main_thread_gets_in(lambda: sum(range(20_000)), calls=40)


def test_out_buffers_are_written_and_returned():
    r, v = torch.randn(3, 5), torch.randn(3, 5)
    out = (torch.empty(3, 5), torch.empty(3, 5))
    adv, ret = gae(r, v, gamma=0.9, lam=0.8, out=out)
    assert adv.data_ptr() == out[0].data_ptr() and ret.data_ptr() == out[1].data_ptr()
    want = reference_gae(r, v, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, want[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidInputError, match="contiguous CPU float32"):
        gae(r, v, gamma=0.9, lam=0.8, out=(torch.empty(3, 5, dtype=torch.float64), out[1]))
