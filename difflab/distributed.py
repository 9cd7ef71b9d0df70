"""Data parallelism on torch.distributed: which share of the work this process does.

Launched by torchrun (WORLD_SIZE, RANK and the rendezvous come from its environment). In training every
process draws the same global batch, noise and label dropout from the same seeded streams and keeps its
contiguous slice, so the averaged gradient equals the single-process gradient of the global batch, and
optimizer, EMA and RNG states stay identical on all ranks: a checkpoint resumes on any number of processes.
In sampling each process draws a contiguous range of sample indices (sample i uses seed + i), and the
gathered union equals the single-process result.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from difflab.errors import DifflabError

DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")  # where the collectives' tensors live (a GPU under nccl)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, x):
        """This rank's contiguous slice of a global batch (a tensor, a Condition or None; it must divide evenly)."""
        if x is None or self.world == 1:
            return x
        size = len(x) // self.world
        return x[self.rank * size: (self.rank + 1) * size]

    def mean(self, value: float) -> float:
        """The average of a per-rank number over all ranks."""
        if self.world == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total) / self.world

    def range(self, n: int, unit: int = 1) -> tuple[int, int]:
        """This rank's contiguous range [lo, hi) of n items, cut at multiples of `unit` (a batch), so every item
        sits in the same batch as in a single-process run (the first ranks take one unit more)."""
        units = -(-n // unit)
        size, extra = divmod(units, self.world)
        first = self.rank * size + min(self.rank, extra)
        last = first + size + (self.rank < extra)
        return min(n, first * unit), min(n, last * unit)

    def gather(self, part: torch.Tensor, n: int, unit: int = 1) -> torch.Tensor:
        """Concatenate every rank's part (rank order, sizes from range(n, unit)) on all ranks."""
        if self.world == 1:
            return part
        bounds = [Shard(r, self.world).range(n, unit) for r in range(self.world)]
        sizes = [hi - lo for lo, hi in bounds]
        padded = part.new_zeros((max(sizes), *part.shape[1:]), device=self.device)
        padded[: len(part)] = part
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:size] for p, size in zip(parts, sizes)]).to(part.device)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on some rank (e.g. the wall-clock budget ran out)."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value)


def resolve_device(name: str) -> torch.device:
    """The device of `--device cpu|cuda|auto` (auto: cuda where available) for this process; under torchrun
    a cuda process uses the GPU numbered by its LOCAL_RANK on its machine."""
    if name not in DEVICES:
        raise DifflabError(f"--device must be cpu, cuda or auto, got {name!r}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DifflabError(f"--device cuda: no CUDA GPU is available to this torch {torch.__version__}; "
                           "use --device cpu or auto")
    local_rank, visible = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local_rank >= visible:
        raise DifflabError(f"--device cuda: process LOCAL_RANK {local_rank} needs GPU {local_rank}, but this machine "
                           f"shows {visible}; give torchrun --nproc-per-node {visible} or fewer")
    return torch.device("cuda", local_rank)


def init_shard(device: torch.device | None = None) -> Shard:
    """Join the process group torchrun set up, or run alone: nccl when this process computes on a GPU (the
    first call's `device`, from resolve_device), gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard()
    if not dist.is_initialized():
        cuda = device is not None and device.type == "cuda"
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    nccl = dist.get_backend() == "nccl"
    comm = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    return Shard(dist.get_rank(), world, comm)


def close() -> None:
    """Leave the process group, if this process joined one, once every process is done with it (a rank that tears
    gloo down while another still writes its files can abort at exit)."""
    if dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a process that failed holds the others up to the timeout only
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            else:
                dist.barrier()
        dist.destroy_process_group()
