"""Generation: a start state (prior noise, or a noised start image) -> sampler over a grid -> decode -> samples."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from difflab.conditioning import Condition
from difflab.denoiser import Denoiser
from difflab.distributed import init_shard
from difflab.errors import DifflabError
from difflab.grids import GridKind, make_grid
from difflab.guidance import Guidance
from difflab.pipelines.samplers import default_grid
from difflab.pipelines.start import check_start, cut_grid, noised_start, start_rows
from difflab.precision import autocast, check_sampling_precision
from difflab.samplers import get_sampler
from difflab.samplers.common import StepInfo, randn_like

if TYPE_CHECKING:
    from difflab.edit.inpaint import Inpainting

NO_GUIDANCE = Guidance()
Decode = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def generate_batches(
    denoiser: Denoiser, shape: tuple[int, ...], n: int, *, sampler: str = "ddim", steps: int = 50,
    grid: GridKind | None = None, sections: str | None = None, levels: Sequence[float] | None = None, seed: int = 0,
    batch: int = 64, cond: Condition | None = None, options: dict[str, Any] | None = None, progress: bool = False,
    callback: Callable[[int, StepInfo], None] | None = None, guidance: Guidance | None = None,
    start: torch.Tensor | None = None, sigma_start: float | None = None, start_noised: bool = False,
    decode: Decode | None = None, inpaint: Inpainting | None = None, precision: str = "fp32",
) -> Iterator[torch.Tensor]:
    """generate() batch by batch, each batch as soon as it is done."""
    if n <= 0:
        raise DifflabError(f"--n must be > 0, got {n}")
    if batch <= 0:
        raise DifflabError(f"--batch must be > 0, got {batch}")
    info = get_sampler(sampler)
    check_sampling_precision(precision)
    guidance = guidance or NO_GUIDANCE
    guidance.check(sampler, denoiser, cond)
    if inpaint is not None:
        inpaint.check(sampler)
    sigmas = make_grid(denoiser.schedule, steps, grid or default_grid(sampler, denoiser.default_grid), sections, levels,
                       renoising=sampler == "consistency")
    if start is not None or sigma_start is not None:
        check_start(start, sigma_start, n, shape)
        sigmas = cut_grid(sigmas, sigma_start)
    device = next(denoiser.parameters()).device
    with tqdm(total=n * (len(sigmas) - 1), desc=f"{sampler} x{steps}", unit="step", disable=not progress,
              leave=False) as bar:
        for b, first in enumerate(range(0, n, batch)):
            size = min(batch, n - first)
            generators = [torch.Generator(device).manual_seed(seed + first + i) for i in range(size)]
            noise = randn_like(torch.empty((size, *shape), dtype=torch.float64, device=device), generators)
            if start is None:
                x = noise * denoiser.prior_std(float(sigmas[0]))
            else:
                x = noised_start(start_rows(start, first, size).to(device, torch.float64), sigma_start, noise,
                                 start_noised)
            cond_b = None if cond is None else cond[first: first + size].to(device)
            negative_b = guidance.negative_rows(first, first + size)
            guided = guidance.wrap(denoiser, cond_b, None if negative_b is None else negative_b.to(device))
            sample = info.fn
            if inpaint is not None:
                guided, sample = inpaint.bind(guided, sample, first, size, noise)

            def step_callback(step: StepInfo, b=b, size=size) -> None:
                bar.update(size)
                if callback is not None:
                    callback(b, step)

            with autocast(device, precision):  # the network's products only; the float64 state stays exact
                x = sample(guided, x, sigmas.to(device), generator=generators, callback=step_callback,
                           **(options or {}))
            yield (x if decode is None else decode(x)).float().cpu()


def generate(denoiser: Denoiser, shape: tuple[int, ...], n: int, **arguments: Any) -> torch.Tensor:
    """n samples of one example `shape`; sample i depends only on seed + i (not on the batch size).

    `grid` None is the sampler's default grid on the model (difflab.pipelines.samplers.default_grid); `levels`
    (`steps` of them, descending) are used instead of a grid's spacing.
    `cond` holds n rows (one per sample) or is None for unconditional sampling; `guidance` (CFG, classifier,
    thresholding) wraps the denoiser batch by batch, its negative condition sliced like `cond`. Sampling starts from
    prior noise at the grid's noisiest level, or from `start` [n or 1, *shape] at level `sigma_start`, below it: the
    grid is cut there, and the start (samples in data space) gets noise of that level from each sample's generator,
    unless it is `start_noised` already. `decode` maps the sampler's output to samples (default: identity, a pixel
    model; a latent model's autoencoder decodes).

    `inpaint` (difflab.edit.inpaint.Inpainting) regenerates only inside a mask: it wraps each batch's denoiser (and,
    for RePaint, the sampler) given the batch's start noise.

    `precision` "bf16" runs the network under bf16 autocast (difflab.precision): on a CPU with AMX about 2x the
    evaluations per second at the same FD (README, "bf16 sampling"); the sampler's update stays in float64.

    `callback(batch_index, step_info)` sees every step. Samples are returned in float32 on the CPU.
    """
    return torch.cat(list(generate_batches(denoiser, shape, n, **arguments)))


def generate_sharded(denoiser: Denoiser, shape: tuple[int, ...], n: int, *, seed: int = 0, batch: int = 64,
                     cond: Condition | None = None, guidance: Guidance | None = None,
                     start: torch.Tensor | None = None, **options: Any) -> torch.Tensor:
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
    if hi <= lo and options.get("decode") is not None:  # a rank with no samples still gathers the decoded shape
        part = options["decode"](part.to(next(denoiser.parameters()).device)).float().cpu()
    if hi > lo:
        part = generate(denoiser, shape, hi - lo, seed=seed + lo, batch=batch,
                        cond=None if cond is None else cond[lo:hi],
                        guidance=None if guidance is None else guidance.select(lo, hi),
                        start=start if start is None or len(start) == 1 else start[lo:hi], **options)
    return shard.gather(part, n, batch)
