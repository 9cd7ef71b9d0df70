"""Training a KL autoencoder on the one loop, then measuring its latent scale factor.

Per image the loss is (Rombach et al. 2022, App. G, without the patch discriminator)
    L = sum_pixels |x - x_hat|^p + beta KL(q(z | x) || N(0, I)) + w_perceptual sum_pixels d_phi(x, x_hat)
divided by the number of pixels, with z drawn from q(z | x) by reparameterisation, p = 1 (l1) or 2 (l2), and d_phi
the distance of x and x_hat in the bundled feature net's layers (difflab.eval.feature_net; no downloaded LPIPS).
The result is an "autoencoder" component with the scale factor s = 1 / std(mean of q(z | x)) over the training set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.eval.feature_net import FEATURE_NET_PATH, IMAGE_SIZE, FeatureNet, load_feature_net
from difflab.nets.autoencoder import AutoencoderConfig, KLAutoencoder, kl_to_standard_normal
from difflab.train.autoencoder_config import AutoencoderSpec, AutoencoderTrainConfig
from difflab.train.checkpoint import ComponentRef, save_checkpoint, unfinished_run
from difflab.train.loop import TrainingLoop
from difflab.train.objective import Objective

CHECKPOINT = "autoencoder.safetensors"


def feature_distance(net: FeatureNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image: the mean squared distance of channel-normalised activations after each of the feature net's conv
    stages, and of its 128-d features (the space FD is measured in); LPIPS without its learned weights."""
    distance = torch.zeros(len(x), device=x.device)
    h = torch.cat([x, y])
    for stage in [*net.conv, net.embed]:
        h = stage(h)
        # Zhang et al. 2018, Eq. 1: unit length per position
        unit = h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10)
        a, b = unit.chunk(2)
        distance = distance + (a - b).square().sum(1).reshape(len(x), -1).mean(1)
    return distance


class AutoencoderObjective(Objective):
    """Reconstruction + beta KL (+ perceptual) of a KL autoencoder, with z ~ q(z | x) by reparameterisation."""

    def __init__(self, net: KLAutoencoder, cfg: AutoencoderTrainConfig, image_shape: tuple[int, ...]):
        self.module, self.cfg = net, cfg
        self.features = None
        if cfg.perceptual > 0:
            if tuple(image_shape) != (1, *IMAGE_SIZE):
                raise DifflabError(f"--perceptual uses the feature net of 1x28x28 images; the data's are "
                                   f"{list(image_shape)}")
            self.features = load_feature_net()[0].requires_grad_(False)
            self.frozen = {"feature_net": ComponentRef.to("feature-net", FEATURE_NET_PATH)}

    def bind(self, module: nn.Module) -> None:
        self.train_module = module
        if self.features is not None:
            self.features.to(next(module.parameters()).device)

    def draw(self, index, x0: torch.Tensor, labels, generator: torch.Generator) -> dict:
        latent = self.module.config.latent_shape(tuple(x0.shape[1:]))
        return {"eps": torch.randn((len(x0), *latent), generator=generator, dtype=x0.dtype)}

    def loss(self, x0: torch.Tensor, draw: dict) -> tuple[torch.Tensor, None]:
        x_hat, mean, logvar = self.train_module(x0, draw["eps"])
        error = (x_hat - x0).abs() if self.cfg.reconstruction == "l1" else (x_hat - x0).square()
        loss = error.flatten(1).sum(1) + self.cfg.beta * kl_to_standard_normal(mean, logvar)
        pixels = math.prod(x0.shape[1:])
        if self.features is not None:
            loss = loss + self.cfg.perceptual * pixels * feature_distance(self.features, x0, x_hat)
        return loss / pixels, None


@torch.no_grad()
def latent_scale(net: KLAutoencoder, images: torch.Tensor, batch: int = 500) -> float:
    """1 / std of the latent means of `images` over all their elements (Rombach et al. 2022, Sec. 4.3.2)."""
    net.eval()
    means = torch.cat([net.encode(images[i: i + batch])[0] for i in range(0, len(images), batch)])
    return 1.0 / means.double().std().item()


@dataclass(frozen=True)
class AutoencoderResult:
    checkpoint: Path
    step: int
    seconds: float
    scale_factor: float


def train_autoencoder(cfg: AutoencoderTrainConfig, out: str | Path, *, network: AutoencoderConfig = AutoencoderConfig(),
                      progress: bool = True, resume: bool = False, steps: int | None = None) -> AutoencoderResult:
    """Train on the images of cfg.data and write OUT/autoencoder.safetensors with the measured scale factor. Every
    cfg.checkpoint_every steps, and on an interrupt, the file also holds the optimizer and noise stream, and
    `resume` continues from it exactly, with its own config; `steps`, where given, replaces its budget (the cosine
    decay then ends there)."""
    path = Path(out) / CHECKPOINT
    saved = unfinished_run(path, "autoencoder") if resume else None
    if saved is not None:
        cfg, network = replace(saved.config.train, steps=steps or saved.config.train.steps), saved.config.network
        if cfg.steps <= saved.step:
            raise DifflabError(f"--steps {cfg.steps}: the run saved at {path} is at step {saved.step} already")
    data = load_dataset(cfg.data, "train", cfg.data_root, seed=cfg.seed)
    if data.kind != "image":
        raise DifflabError(f"--data: an autoencoder trains on images, and {data.name!r} holds points")
    network = replace(network, in_channels=data.shape[0])
    spec = AutoencoderSpec(network, data.shape, cfg)
    network.latent_shape(data.shape)  # the image sides must be multiples of f
    torch.manual_seed(cfg.seed)
    net = KLAutoencoder(network)
    loop = TrainingLoop(AutoencoderObjective(net, cfg, data.shape), data, cfg, Path(out), kind="autoencoder",
                        config=spec, checkpoint_name=CHECKPOINT, progress=progress)
    if saved is not None:
        loop.restore(saved)
    start = time.perf_counter()
    loop.run()
    seconds = time.perf_counter() - start
    n = len(data) if cfg.scale_n is None else min(cfg.scale_n, len(data))
    scale = latent_scale(net.cpu(), data.batch(torch.arange(n))[0])
    # the finished component: weights and spec with the scale factor, without the training state
    save_checkpoint(path, replace(spec, scale_factor=scale), loop.step, kind="autoencoder", model=net)
    return AutoencoderResult(path, loop.step, seconds, scale)
