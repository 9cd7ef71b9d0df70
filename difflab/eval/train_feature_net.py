"""Train the Fashion-MNIST feature network: `python -m difflab.eval.train_feature_net [--out PATH]`.

Recipe: AdamW with a one-cycle learning rate, cross-entropy with label smoothing, random horizontal flips,
a few epochs over the 60k training images on one CPU thread; prints the test accuracy and the training time.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from difflab.data import load_fashion_mnist
from difflab.eval.feature_net import FEATURE_NET_PATH, FeatureNet, save_feature_net
from difflab.eval.features import extract

RECIPE = {"epochs": 5, "batch": 128, "lr": 3e-3, "weight_decay": 1e-4, "label_smoothing": 0.05, "seed": 0}


def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose most probable class is the label."""
    return float((extract(net.eval(), images).probs.argmax(1) == labels).double().mean())


def train(epochs: int, batch: int, lr: float, weight_decay: float, label_smoothing: float, seed: int,
          data_root: str | None = None) -> tuple[FeatureNet, float]:
    """The trained network and its training time in seconds."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train_set = load_fashion_mnist(data_root, "train")
    net = FeatureNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(train_set) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train_set), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for step in bar:
            index = order[step * batch: (step + 1) * batch]
            x, y = train_set.batch(index)
            flip = torch.rand(len(index), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(net(x)[1], y, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval(), time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m difflab.eval.train_feature_net", description=__doc__)
    parser.add_argument("--out", default=str(FEATURE_NET_PATH), help="where to write the weights (.safetensors)")
    parser.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    for name, value in RECIPE.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = {name: getattr(args, name) for name in RECIPE}
    net, seconds = train(**recipe, data_root=args.data_root)
    test_set = load_fashion_mnist(args.data_root, "test")
    test_accuracy = accuracy(net, test_set.data, test_set.labels)
    save_feature_net(net, args.out, {**recipe, "threads": args.threads, "train_seconds": round(seconds, 1),
                                     "test_accuracy": test_accuracy})
    print(f"test accuracy {test_accuracy:.4f} after {seconds / 60:.1f} min of training; wrote {args.out}")


if __name__ == "__main__":
    main()
