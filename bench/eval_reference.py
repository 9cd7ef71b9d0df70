"""Reference figures for `difflab eval`: the metrics of real images, clean and degraded, against the test set,
and of fresh toy draws against each other, so a reader knows what a number means. Prints markdown tables.

    python bench/eval_reference.py [--n 10000] [--data-root DIR]

Degraded rows use training images (never the test images themselves, which would share content with the
reference). Noise std is in units of the [-1, 1] pixel range; blur std in pixels.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from difflab.data import load_fashion_mnist
from difflab.data.toy import TOY_SETS, sample_toy
from difflab.errors import run_script
from difflab.eval.report import evaluate_images, evaluate_points

IMAGE_COLUMNS = ("fd", "kid", "kid_std", "precision", "recall", "class_coverage")
TOY_COLUMNS = ("swd", "energy", "ks", "kl_data_samples", "kl_samples_data")


def add_noise(images: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    """uint8 images plus Gaussian noise of `std` in [-1, 1] units, clipped and rounded back to uint8."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return ((images.float() + 127.5 * std * noise).clamp(0, 255)).round().to(torch.uint8)


def blur(images: torch.Tensor, std: float) -> torch.Tensor:
    """uint8 [N, 28, 28] convolved with a Gaussian of `std` pixels (separable, reflected borders)."""
    radius = math.ceil(3 * std)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1) / std) ** 2)
    taps = taps / taps.sum()
    x = F.pad(images.float()[:, None], (radius,) * 4, mode="reflect")
    x = F.conv2d(F.conv2d(x, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
    return x[:, 0].round().clamp(0, 255).to(torch.uint8)


def image_rows(n: int, data_root: str | None) -> list[tuple[str, torch.Tensor]]:
    train = load_fashion_mnist(data_root, "train")
    images = train.data[:n, 0]
    five_classes = train.data[train.labels < 5][:n, 0]
    return [
        (f"{n} training images (the floor)", images),
        (f"{min(n, 2000)} training images", images[:2000]),
        (f"{min(n, 1000)} training images", images[:1000]),
        ("+ noise std 0.05", add_noise(images, 0.05)),
        ("+ noise std 0.1", add_noise(images, 0.1)),
        ("+ noise std 0.2", add_noise(images, 0.2)),
        ("blur std 0.5 px", blur(images, 0.5)),
        ("blur std 1 px", blur(images, 1.0)),
        ("classes 0-4 only (mode dropping)", five_classes),
    ]


def markdown(rows: list[tuple[str, dict]], columns: tuple[str, ...]) -> str:
    def cell(value) -> str:
        return " / ".join(cell(v) for v in value) if isinstance(value, list) else f"{value:.4g}"

    lines = ["| set | n | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    lines += [f"| {name} | {m['n']} | " + " | ".join(cell(m[c]) for c in columns) + " |" for name, m in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="images per set (default 10000)")
    parser.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = [(name, evaluate_images(images.numpy(), data_root=args.data_root)) for name, images in
            image_rows(args.n, args.data_root)]
    print(f"Images against the {rows[0][1]['reference']} set, feature net {rows[0][1]['feature_net']}:\n")
    print(markdown(rows, IMAGE_COLUMNS))
    toy_rows = []
    for n in (1000, 10_000):
        for name in TOY_SETS:
            a = sample_toy(name, n, torch.Generator().manual_seed(1))
            b = sample_toy(name, n, torch.Generator().manual_seed(2))
            toy_rows.append((f"toy:{name}, two draws", evaluate_points(a, b, name)))
    moons = sample_toy("moons", 10_000, torch.Generator().manual_seed(1))
    reference = sample_toy("moons", 10_000, torch.Generator().manual_seed(2))
    noise = 0.1 * torch.randn(moons.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    toy_rows.append(("toy:moons + noise std 0.1", evaluate_points(moons + noise, reference, "moons")))
    toy_rows.append(("toy:moons shifted by (0.1, 0)", evaluate_points(moons + torch.tensor([0.1, 0.0]), reference,
                                                                       "moons")))
    print("\nToy points against a fresh draw of the same size:\n")
    print(markdown(toy_rows, TOY_COLUMNS))
    print(f"\n({time.perf_counter() - start:.0f} s; python bench/eval_reference.py --n {args.n})")


if __name__ == "__main__":
    run_script(main)
