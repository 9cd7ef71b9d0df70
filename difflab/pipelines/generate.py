"""Unconditional / class-conditional generation: prior noise -> sampler over a grid -> samples in data space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from difflab.conditioning import Condition
from difflab.denoiser import Denoiser
from difflab.distributed import init_shard
from difflab.errors import DifflabError
from difflab.grids import GridKind, make_grid
from difflab.guidance import Guidance
from difflab.samplers import get_sampler
from difflab.samplers.common import StepInfo, randn_like

NO_GUIDANCE = Guidance()


@torch.no_grad()
def generate(
    denoiser: Denoiser, shape: tuple[int, ...], n: int, *, sampler: str = "ddim", steps: int = 50,
    grid: GridKind = "trailing", sections: str | None = None, seed: int = 0, batch: int = 64,
    cond: Condition | None = None, options: dict[str, Any] | None = None, progress: bool = False,
    callback: Callable[[int, StepInfo], None] | None = None, guidance: Guidance | None = None,
) -> torch.Tensor:
    """n samples of one example `shape`; sample i depends only on seed + i (not on the batch size).

    `cond` holds n rows (one per sample) or is None for unconditional sampling; `guidance` (CFG, classifier,
    thresholding) wraps the denoiser batch by batch, its negative condition sliced like `cond`.

    `callback(batch_index, step_info)` sees every step. Samples are returned in float32 on the CPU.
    """
    if n <= 0:
        raise DifflabError(f"--n must be > 0, got {n}")
    if batch <= 0:
        raise DifflabError(f"--batch must be > 0, got {batch}")
    info = get_sampler(sampler)
    guidance = guidance or NO_GUIDANCE
    guidance.check_sampler(sampler)
    sigmas = make_grid(denoiser.schedule, steps, grid, sections)
    device = next(denoiser.parameters()).device
    out = []
    bar = tqdm(total=n * steps, desc=f"{sampler} x{steps}", unit="step", disable=not progress, leave=False)
    for b, start in enumerate(range(0, n, batch)):
        size = min(batch, n - start)
        generators = [torch.Generator(device).manual_seed(seed + start + i) for i in range(size)]
        x = randn_like(torch.empty((size, *shape), dtype=torch.float64, device=device), generators)
        x = x * denoiser.prior_std(float(sigmas[0]))
        cond_b = None if cond is None else cond[start: start + size].to(device)
        negative_b = guidance.negative_rows(start, start + size)
        guided = guidance.wrap(denoiser, cond_b, None if negative_b is None else negative_b.to(device))

        def step_callback(step: StepInfo, b=b, size=size) -> None:
            bar.update(size)
            if callback is not None:
                callback(b, step)

        x = info.fn(guided, x, sigmas.to(device), generator=generators, callback=step_callback, **(options or {}))
        out.append(x.float().cpu())
    bar.close()
    return torch.cat(out)


def generate_sharded(denoiser: Denoiser, shape: tuple[int, ...], n: int, *, seed: int = 0, batch: int = 64,
                     cond: Condition | None = None, guidance: Guidance | None = None, **options: Any) -> torch.Tensor:
    """generate() split by whole batches over the torchrun processes; every process returns all n samples.

    Sample i still uses seed + i and sits in the same batch, so the union equals the single-process result.
    """
    if n <= 0:
        raise DifflabError(f"--n must be > 0, got {n}")
    if batch <= 0:
        raise DifflabError(f"--batch must be > 0, got {batch}")
    shard = init_shard()
    lo, hi = shard.range(n, batch)
    part = torch.empty((0, *shape))
    if hi > lo:
        part = generate(denoiser, shape, hi - lo, seed=seed + lo, batch=batch,
                        cond=None if cond is None else cond[lo:hi],
                        guidance=None if guidance is None else guidance.select(lo, hi), **options)
    return shard.gather(part, n, batch)
