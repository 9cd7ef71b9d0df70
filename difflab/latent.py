"""The latent space of a trained autoencoder component: images -> scaled latents -> images.

A latent diffusion model (Rombach et al. 2022) runs on x = s * mean(q(z | image)), where the scale factor s (1 / std
of the latent means on the training set, as Stable Diffusion's 0.18215) makes the data unit-variance like the
pixels, and decodes its samples with decoder(x / s).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from difflab.data import Dataset
from difflab.errors import DifflabError
from difflab.nets.autoencoder import KLAutoencoder
from difflab.train.autoencoder_config import AutoencoderSpec
from difflab.train.checkpoint import ComponentRef, load_checkpoint


class LatentSpace(nn.Module):
    """A frozen autoencoder and its scale: encode(images) -> x, decode(x) -> images."""

    def __init__(self, net: KLAutoencoder, spec: AutoencoderSpec):
        super().__init__()
        if spec.scale_factor is None:
            raise DifflabError("the autoencoder has no latent scale factor yet (it is measured when training ends)")
        self.net, self.spec, self.scale = net.eval().requires_grad_(False), spec, spec.scale_factor

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.spec.data_shape)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.spec.latent_shape)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> scaled latent means [N, c, H/f, W/f], `batch` at a time."""
        device = next(self.net.parameters()).device
        return torch.cat([self.net.encode(images[i: i + batch].to(device, torch.float32))[0] * self.scale
                          for i in range(0, len(images), batch)]).to(images.dtype)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images, decoded in float32."""
        return self.net.decode(x.float() / self.scale)


def load_autoencoder(path: str | Path) -> LatentSpace:
    """The latent space of an autoencoder component file (eval mode, no parameter gradients)."""
    checkpoint = load_checkpoint(path, kind="autoencoder")
    net = KLAutoencoder(checkpoint.config.network)
    try:
        net.load_state_dict(checkpoint.section("model"))
    except RuntimeError as err:
        raise DifflabError(f"autoencoder {path}: weights do not fit its config ({str(err).splitlines()[0]})") from None
    return LatentSpace(net, checkpoint.config)


def training_latents(path: str | Path, data: Dataset, ref: ComponentRef | None = None
                     ) -> tuple[Dataset, LatentSpace, ComponentRef]:
    """The images of `data` encoded once into the latent space of the autoencoder at `path`, that space, and the
    reference a latent model's checkpoint keeps to it (on resume, `ref`, checked against the file)."""
    if ref is None:
        ref = ComponentRef.to("autoencoder", path)
    else:
        ref = replace(ref, path=str(ref.check("autoencoder", path)))
    latent = load_autoencoder(path)
    if data.kind != "image" or tuple(data.shape) != latent.image_shape:
        raise DifflabError(f"--autoencoder {path} codes images of shape {list(latent.image_shape)}; data "
                           f"{data.name!r} holds {data.kind} of shape {list(data.shape)}")
    chunk = 1000
    x = torch.cat([latent.encode(data.batch(torch.arange(i, min(i + chunk, len(data))))[0])
                   for i in range(0, len(data), chunk)])
    return Dataset(f"{data.name} (latents)", "latent", x, data.labels, data.class_names), latent, ref
