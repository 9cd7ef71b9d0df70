"""A KL-regularised convolutional autoencoder (Rombach et al. 2022, Sec. 3 and App. G): an encoder to the mean and
log-variance of a latent z at 1/f of the image's side, and a decoder back to the image.

    image [B, C, H, W] -> encode -> (mean, logvar) [B, latent_channels, H/f, W/f] -> decode(z) -> [B, C, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import DifflabError

FACTORS = (2, 4)  # downsampling factors f
LOGVAR_RANGE = (-30.0, 20.0)  # log sigma^2 is clamped here, as in the latent-diffusion code, to keep exp() finite


@dataclass(frozen=True)
class AutoencoderConfig:
    in_channels: int = 1
    factor: int = 4  # f: the latent is 1/f of the image's height and width
    latent_channels: int = 4
    channels: int = 16  # width at full resolution; each halving of the side doubles it
    num_res_blocks: int = 1
    groups: int = 8

    def __post_init__(self) -> None:
        if self.factor not in FACTORS:
            raise DifflabError(f"autoencoder factor f must be one of {', '.join(map(str, FACTORS))}, got {self.factor}")
        for name in ("in_channels", "latent_channels", "channels", "num_res_blocks", "groups"):
            if getattr(self, name) <= 0:
                raise DifflabError(f"autoencoder {name} must be > 0, got {getattr(self, name)}")
        if self.channels % self.groups:
            raise DifflabError(f"autoencoder channels {self.channels} must be divisible by groups={self.groups}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of each level, full resolution first: log2(f) halvings of the side."""
        return tuple(self.channels * 2**level for level in range(self.factor.bit_length()))

    def latent_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """The latent [c, H/f, W/f] of an image [C, H, W]; the sides must be multiples of f."""
        channels, height, width = image_shape
        if channels != self.in_channels or height % self.factor or width % self.factor:
            raise DifflabError(f"the autoencoder takes {self.in_channels}-channel images with sides divisible by "
                               f"f={self.factor}, got shape {list(image_shape)}")
        return self.latent_channels, height // self.factor, width // self.factor


class Block(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual connection."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                  nn.GroupNorm(groups, c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def head(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.GroupNorm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))


class Encoder(nn.Module):
    """[B, C, H, W] -> [B, 2 latent_channels, H/f, W/f]: the mean and log-variance of q(z | x), stacked."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths, groups = config.widths, config.groups
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, widths[0], 3, padding=1)]
        c = widths[0]
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                layers.append(Block(c, width, groups))
                c = width
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        layers += [Block(c, c, groups), head(c, 2 * config.latent_channels, groups)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Decoder(nn.Module):
    """[B, latent_channels, h, w] -> [B, C, f h, f w]."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        widths, groups = config.widths, config.groups
        c = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(config.latent_channels, c, 3, padding=1), Block(c, c, groups)]
        for level in reversed(range(len(widths))):
            for _ in range(config.num_res_blocks + 1):
                layers.append(Block(c, widths[level], groups))
                c = widths[level]
            if level > 0:
                layers.append(Upsample(c))
        layers.append(head(c, config.in_channels, groups))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class KLAutoencoder(nn.Module):
    """encode(x) -> (mean, logvar) of the diagonal Gaussian q(z | x); decode(z) -> x_hat."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.config.latent_shape(tuple(x.shape[1:]))
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_hat, mean, logvar) with z = mean + exp(logvar / 2) eps drawn by reparameterisation (Kingma & Welling
        2014, Eq. 10)."""
        mean, logvar = self.encode(x)
        return self.decode(mean + torch.exp(0.5 * logvar) * eps), mean, logvar


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z | x) || N(0, I)) per example, summed over the latent's elements."""
    # KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)  (Kingma & Welling 2014, App. B)
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).flatten(1).sum(1)
