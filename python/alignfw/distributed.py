"""The multi-process path: process group, rank helpers, collectives and model wrapping.

``torchrun --nproc_per_node=N -m alignfw ...`` runs the same command in N processes. This module
owns everything that differs between one process and N, on top of ``torch.distributed`` only:

- :func:`init` / :func:`shutdown`: the process group from torchrun's environment (``WORLD_SIZE``,
  ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); NCCL on CUDA (``LOCAL_RANK`` picks the
  GPU), gloo on CPU. Without torchrun (``WORLD_SIZE`` unset or 1) nothing is initialised and every
  helper below is the identity, so a single process behaves exactly as before;
- :func:`rank`, :func:`world_size`, :func:`is_main`, :func:`shard`: who am I, and my share of a list;
- collectives the pipeline and the algorithms need: :func:`all_reduce_sum`, :func:`mean_metrics`,
  :func:`weighted_mean_metrics`, :func:`broadcast_object`, :func:`gather_objects`, and global
  statistics: :func:`global_mean`, :func:`global_masked_mean`,
  :func:`global_masked_whiten` (advantage whitening over every rank's tokens);
- :func:`wrap` / :func:`no_sync`: the trained module under DDP (default) or FSDP2
  (``torch.distributed.fsdp.fully_shard`` per transformer block plus the root); gradients are
  averaged across ranks by the wrapper, and :func:`no_sync` skips the all-reduce on
  gradient-accumulation micro-steps.

Reference: PyTorch's DDP and FSDP2 tutorials and torchtune's ``training/_distributed.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from alignfw.config import DistributedConfig
from alignfw.exceptions import ConfigError
from alignfw.objectives import masked_mean, masked_whiten

__all__ = [
    "STRATEGIES",
    "DistributedConfig",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "env_world_size",
    "gather_objects",
    "global_masked_mean",
    "global_masked_whiten",
    "global_mean",
    "init",
    "is_distributed",
    "is_fsdp",
    "is_main",
    "local_rank",
    "mean_metrics",
    "no_sync",
    "rank",
    "shard",
    "shard_optimizer_state",
    "shutdown",
    "to_float",
    "weighted_mean_metrics",
    "world_size",
    "wrap",
]

T = TypeVar("T")

#: ``ddp``: every rank holds the whole model, gradients are all-reduced (DistributedDataParallel);
#: ``fsdp2``: parameters, gradients and optimizer state are sharded (``fully_shard``).
STRATEGIES = ("ddp", "fsdp2")


# -- process group ---------------------------------------------------------------------------


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it; 1 without torchrun."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with torchrun") from None


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(cfg: DistributedConfig, device: torch.device) -> torch.device:
    """Join torchrun's process group (if any) and return this rank's device.

    With ``WORLD_SIZE`` unset or 1 this does nothing and returns ``device``. On CUDA each rank
    takes ``cuda:LOCAL_RANK``. Idempotent: a second call in the same process reuses the group.
    """
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"distributed.strategy={cfg.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if env_world_size() <= 1:
        return device
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank() >= n:
            raise ConfigError(
                f"LOCAL_RANK={local_rank()} but this node has {n} CUDA device(s); launch at most {n} processes per node "
                "(torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend not in ("nccl", "gloo"):
        raise ConfigError(f"distributed.backend={cfg.backend!r}: choose auto, nccl or gloo")
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("distributed.backend=nccl needs CUDA devices; use distributed.backend=gloo (or auto) on CPU")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=cfg.timeout_s),
            device_id=device if backend == "nccl" else None,
        )
    return device


def shutdown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes outputs."""
    return rank() == 0


def shard(items: Sequence[T], *, require_even: bool = False, what: str = "items") -> list[T]:
    """This rank's contiguous share of ``items`` (rank ``r`` of ``W`` gets ``items[r*n/W:(r+1)*n/W]``).

    Contiguous shares keep the micro-batch boundaries of a single process when the micro-batch
    size divides the share, which is what makes a 2-rank step equal a 1-process step.
    """
    n, w, r = len(items), world_size(), rank()
    if require_even and n % w:
        raise ConfigError(f"{what}={n} is not divisible by the {w} processes; choose a multiple of {w}")
    return list(items[r * n // w : (r + 1) * n // w])


# -- collectives -----------------------------------------------------------------------------


def _comm_device() -> torch.device:
    """Where collective buffers live: the current CUDA device under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over ranks (a new tensor on ``x``'s device; ``x`` itself when not distributed)."""
    if not is_distributed():
        return x
    buf = x.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(x.device)


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (pickled over the wire only; nothing is read from files)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Average every float metric over ranks (the same keys on every rank, in any order).

    Means over equal shards are exact global means; for spreads (``reward/std``) this is the mean
    of the ranks' values. A NaN on any rank makes the result NaN on every rank, so the NaN check
    that follows stops all ranks together with the same message.
    """
    return weighted_mean_metrics(metrics, 1.0)


def weighted_mean_metrics(metrics: dict[str, Any], weight: float) -> dict[str, Any]:
    """``sum_r w_r * m_r / sum_r w_r`` for every float metric (``weight``: this rank's ``w_r``, e.g.
    its number of evaluation records); keys present on some ranks only are averaged over those."""
    if not is_distributed():
        return metrics
    keys = sorted(set().union(*gather_objects(sorted(k for k, v in metrics.items() if isinstance(v, (int, float))))))
    vals = torch.zeros(2 * len(keys), dtype=torch.float64)
    for i, k in enumerate(keys):
        if k in metrics:
            vals[i], vals[len(keys) + i] = float(metrics[k]) * weight, weight
    vals = all_reduce_sum(vals)
    out = dict(metrics)
    for i, k in enumerate(keys):
        out[k] = float(vals[i] / vals[len(keys) + i]) if vals[len(keys) + i] > 0 else float("nan")
    return out


def _global_sum_count(total: torch.Tensor, count: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_r total_r, sum_r count_r)`` over ranks in float64, in one all-reduce."""
    both = torch.stack([total.double(), torch.as_tensor(count, dtype=torch.float64, device=total.device)])
    s = all_reduce_sum(both)
    return s[0], s[1]


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of all elements of ``x`` over every rank (``x.mean()`` in one process)."""
    if not is_distributed():
        return x.mean()
    s, n = _global_sum_count(x.sum(), float(x.numel()))
    return (s / n).to(x.dtype)


def global_masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1, over every rank's elements. Shapes: any, equal."""
    if not is_distributed():
        return masked_mean(x, mask)
    m = mask.to(x.dtype)
    s, n = _global_sum_count((x * m).sum(), m.sum())
    return (s / n.clamp(min=1)).to(x.dtype)


def global_masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """:func:`alignfw.objectives.masked_whiten` with the mean and (unbiased) variance taken over the
    masked elements of *every* rank, so N ranks whiten as one process would whiten the
    concatenated batch. Shapes: ``x``, ``mask`` ``(b, R)``; returns ``(b, R)``, zero where masked."""
    if not is_distributed():
        return masked_whiten(x, mask, shift_mean=shift_mean)
    mean = global_masked_mean(x, mask)
    ss, n = _global_sum_count((((x - mean) ** 2) * mask.to(x.dtype)).sum(), mask.to(x.dtype).sum())
    var = ss / n.clamp(min=1) * (n / (n - 1) if n > 1 else 1.0)  # unbiased, as objectives.masked_var
    return masked_whiten(x, mask, shift_mean=shift_mean, mean_var=(mean, var.to(x.dtype)))


def to_float(x: Any) -> float:
    """A Python float from a number, a tensor or a DTensor (FSDP2's gradient norm)."""
    if hasattr(x, "full_tensor"):
        x = x.full_tensor()
    return float(x)


# -- wrapping ---------------------------------------------------------------------------------


def _blocks(module: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face model: the ``nn.ModuleList`` with the most parameters."""
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        return []
    return list(max(lists, key=lambda ml: sum(p.numel() for p in ml.parameters())))


def wrap(module: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    """``module`` ready for multi-process training (``module`` itself in one process).

    ``ddp``: a ``DistributedDataParallel`` wrapper (rank 0's weights are broadcast at construction;
    the wrapper's forward must be the one that runs under autograd). ``fsdp2``: ``fully_shard`` on
    each transformer block, then on ``module`` as the root; this replaces the parameters with
    sharded DTensors *in place*, so build optimizers after wrapping. The returned module is the one
    whose ``forward`` the training step must call.
    """
    if not is_distributed():
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # buffers (attention masks) never change: no per-forward broadcast, which would also be a
        # collective that generation's variable number of forwards could mismatch across ranks
        return DDP(module, device_ids=ids, forward_sync_buffers=False)
    if strategy == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for block in _blocks(module):
            fully_shard(block)
        fully_shard(module)
        return module
    raise ConfigError(f"distributed.strategy={strategy!r}: choose one of {', '.join(STRATEGIES)}")


def is_fsdp(module: nn.Module | None) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextlib.contextmanager
def no_sync(module: nn.Module | None, skip: bool = True) -> Iterator[None]:
    """Within the block, backward passes through ``module`` accumulate gradients locally without the
    cross-rank all-reduce (DDP ``no_sync``; FSDP2 ``set_requires_gradient_sync(False)``). Use it on
    every micro-batch but the last of an accumulation; ``skip=False`` or a plain module: no effect."""
    if not skip or module is None or not is_distributed():
        yield
        return
    from torch.nn.parallel import DistributedDataParallel as DDP

    if isinstance(module, DDP):
        with module.no_sync():
            yield
    elif is_fsdp(module):
        module.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)  # type: ignore[operator]
    else:
        yield


def shard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After ``optimizer.load_state_dict`` of a full (gathered) state under FSDP2: turn each state
    tensor shaped like its DTensor parameter into the same sharding, as the live state is."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for group in optimizer.param_groups:
        for p in group["params"]:
            if not isinstance(p, DTensor) or p not in optimizer.state:
                continue
            st = optimizer.state[p]
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and not isinstance(v, DTensor) and tuple(v.shape) == tuple(p.shape):
                    st[k] = distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
