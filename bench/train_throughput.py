"""Training throughput (images/s) of difflab's U-Net against diffusers' UNet2DModel of comparable size.

Both train on the same random Fashion-MNIST-shaped batches with the same AdamW step and L_simple loss;
measurements alternate between the models (rounds) so machine noise hits both alike. With one thread a step is
timed by the process's CPU time, which other processes on a busy machine do not inflate; with more, by the wall
clock. `--profile` prints torch.profiler's table of the operators that take difflab's step time. `--precision bf16`
runs every model's forward and loss under bf16 autocast (`difflab train --precision bf16`), so the ratio stays one of
equals; difflab's U-Net trains in the layout `difflab train` gives it at that precision.

    python bench/train_throughput.py [--batch 64] [--rounds 5] [--iters 5] [--threads N] [--precision bf16] [--profile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from difflab.errors import run_script
from difflab.nets import build_network, network_config
from difflab.precision import autocast
from difflab.train.speed import memory_format

RECIPE = Path(__file__).resolve().parent.parent / "difflab" / "configs" / "fashion_mnist.json"


def diffusers_unet(config) -> torch.nn.Module:
    """UNet2DModel with the same widths, depth and attention placement as our recipe."""
    from diffusers import UNet2DModel

    widths = tuple(config.channels * m for m in config.channel_mult)
    levels = range(len(widths))
    return UNet2DModel(
        sample_size=28, in_channels=config.in_channels, out_channels=config.in_channels,
        block_out_channels=widths, layers_per_block=config.num_res_blocks, norm_num_groups=config.groups,
        down_block_types=tuple("AttnDownBlock2D" if i in config.attention_levels else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in config.attention_levels else "UpBlock2D"
                             for i in reversed(levels)),
        attention_head_dim=config.head_dim,
    )


class DiffusersAdapter(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, timestep):
        return self.net(x, timestep).sample


def training_step(model, batch: int, channels_last: bool, precision: str):
    """A function running one training step (forward and loss under `precision`'s autocast, backward, AdamW) of
    `model` on a fixed random batch."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (batch,), generator=g).float()

    def step():
        with autocast(torch.device("cpu"), precision):
            loss = (model(x, t) - x).pow(2).float().mean()  # L_simple-shaped objective
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_time(step, iters: int, clock) -> float:
    """Seconds per training step, averaged over `iters` steps after a warm-up step."""
    step()
    start = clock()
    for _ in range(iters):
        step()
    return (clock() - start) / iters


def profile(step, steps: int = 3, rows: int = 15) -> None:
    """torch.profiler's operator table (self CPU time) over `steps` training steps."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--profile", action="store_true", help="print the operator table of difflab's step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    single = torch.get_num_threads() == 1
    clock = time.process_time if single else time.perf_counter
    config = network_config(json.loads(RECIPE.read_text())["network"])
    torch.manual_seed(0)
    models = {
        "difflab UNet (channels_last)": (build_network(config), True),
        "difflab UNet (contiguous)": (build_network(config), False),
        "diffusers UNet2DModel (contiguous)": (DiffusersAdapter(diffusers_unet(config)), False),
        "diffusers UNet2DModel (channels_last)": (DiffusersAdapter(diffusers_unet(config)), True),
    }
    steps = {name: training_step(model, args.batch, channels_last, args.precision)
             for name, (model, channels_last) in models.items()}
    layout = memory_format(torch.device("cpu"), args.precision)  # as `difflab train` runs it
    trained = f"difflab UNet ({'channels_last' if layout == torch.channels_last else 'contiguous'})"
    if args.profile:
        profile(steps[trained])
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(step_time(step, args.iters, clock))
    print(f"batch {args.batch}, {args.precision}, {torch.get_num_threads()} threads, {args.rounds} rounds x "
          f"{args.iters} steps (median), timed by {'CPU time' if single else 'wall clock'}")
    print(f"{'model':<40} {'params':>10} {'images/s':>10}")
    rate = {}
    for name, (model, _) in models.items():
        rate[name] = args.batch / statistics.median(times[name])
        print(f"{name:<40} {sum(p.numel() for p in model.parameters()):>10,} {rate[name]:>10.1f}")
    ours = rate[trained]
    best_theirs = max(rate["diffusers UNet2DModel (contiguous)"], rate["diffusers UNet2DModel (channels_last)"])
    print(f"ratio difflab (as trained) / diffusers default: {ours / rate['diffusers UNet2DModel (contiguous)']:.2f}x")
    print(f"ratio difflab (as trained) / diffusers best layout: {ours / best_theirs:.2f}x")


if __name__ == "__main__":
    run_script(main)
