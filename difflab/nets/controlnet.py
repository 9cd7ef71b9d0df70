"""ControlNet (Zhang et al. 2023): spatial control of a frozen U-Net through a trainable copy of its encoder.

The copy (embeddings, input conv, down levels, middle; UNet.copy_trunk) sees the noisy input, the noise level and the
prompt like the base, plus the condition image through a small hint encoder whose output is added after the input
conv. Each of its skips and its middle's output pass through a zero-initialised 1x1 convolution into the base's
decoder as additive residuals (UNet.forward's down_residuals / mid_residual):

    y_c = F(x; Theta) + Z(F(x + Z(c; Theta_z1); Theta_c); Theta_z2)       (Zhang et al. 2023, Eq. 2)

so at initialisation every residual is exactly zero and the base's output is unchanged, bit for bit.
ControlledNet wraps a base network with any number of ControlNets, each with its weights per residual and the
range of noise levels it acts on; their residuals are summed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from difflab.conditioning import Condition, TensorCondition
from difflab.errors import DifflabError
from difflab.nets.unet import UNet, UNetConfig, UNetTrunk

SOFT_INJECTION_BASE = 0.825  # ControlNet's guess-mode decay (cldm's "magic number"): 0.825 ** 12 = 0.099


@dataclass(frozen=True)
class ControlNetConfig:
    unet: UNetConfig  # the base's config, which the copied trunk shares
    control: str  # the annotator its condition images come from (difflab.annotators), or "none"
    hint_channels: int = 1
    hint_widths: tuple[int, ...] = (16, 32)
    hint_downsample: int = 0  # stride-2 convs in the hint encoder: log2(image size / the network's input size)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hint_widths", tuple(self.hint_widths))
        if self.hint_channels < 1 or not self.hint_widths or min(self.hint_widths) < 1:
            raise DifflabError("controlnet: hint_channels and hint_widths must be >= 1")
        if not 0 <= self.hint_downsample <= len(self.hint_widths):
            raise DifflabError(f"controlnet.hint_downsample must lie in 0..{len(self.hint_widths)}")

    def to_dict(self) -> dict:
        return {**asdict(self), "unet": asdict(self.unet)}

    @classmethod
    def from_dict(cls, spec: dict) -> ControlNetConfig:
        return cls(**{**spec, "unet": UNetConfig(**spec["unet"])})


def zero_conv(c_in: int, c_out: int, kernel: int = 1) -> nn.Conv2d:
    """A convolution with weight and bias 0: its output is exactly 0 until trained (Zhang et al. 2023, Sec. 3.1)."""
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def hint_encoder(config: ControlNetConfig, width: int) -> nn.Sequential:
    """The condition image [B, hint_channels, H * 2^d, W * 2^d] -> features [B, width, H, W]: 3x3 convs with SiLU,
    stride 2 in the first d of them, and a zero conv last (ControlNet's input_hint_block, smaller)."""
    layers: list[nn.Module] = []
    c = config.hint_channels
    for k, w in enumerate(config.hint_widths):
        stride = 2 if k < config.hint_downsample else 1
        layers += [nn.Conv2d(c, w, 3, padding=1, stride=stride), nn.SiLU(), nn.Conv2d(w, w, 3, padding=1), nn.SiLU()]
        c = w
    return nn.Sequential(*layers, zero_conv(c, width, 3))


class ControlNet(nn.Module):
    """net(x, c_noise, cond, hint [B, C, H', W'], present [B]) -> (down residuals, mid residual), zero where a row's
    control is not present."""

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        self.config = config
        self.trunk = UNetTrunk(config.unet)
        self.hint = hint_encoder(config, config.unet.channels)
        self.zero_convs = nn.ModuleList(zero_conv(w, w) for w in self.trunk.skip_widths)
        self.mid_zero_conv = zero_conv(self.trunk.skip_widths[-1], self.trunk.skip_widths[-1])

    @classmethod
    def from_unet(cls, unet: UNet, control: str, **hint) -> ControlNet:
        """A ControlNet whose trunk starts as a copy of `unet`'s encoder and middle (Zhang et al. 2023, Sec. 3.2)."""
        net = cls(ControlNetConfig(unet.config, control, **hint))
        net.trunk.load_state_dict(unet.copy_trunk().state_dict())
        return net.to(next(unet.parameters()).device)

    @property
    def residual_count(self) -> int:
        """The residuals it adds: one per skip and the middle's."""
        return len(self.zero_convs) + 1

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition | None, hint: torch.Tensor,
                present: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        trunk = self.trunk
        emb, context = trunk.embedding(x, c_noise, cond)
        skips = trunk.encode(x, emb, context, trunk.concatenated(x, cond), hint=self.hint(hint.to(x.dtype)))
        h = trunk.middle(skips[-1], emb, context)
        mask = present.to(x.dtype).view(-1, 1, 1, 1)
        return [conv(s) * mask for conv, s in zip(self.zero_convs, skips)], self.mid_zero_conv(h) * mask


def with_control(cond: Condition | None, images: torch.Tensor, present: torch.Tensor | None = None) -> Condition:
    """`cond` (None: unconditional) with control images [B, C, H, W] (present on every row unless told)."""
    control = TensorCondition.of(images) if present is None else TensorCondition(images, present)
    if cond is None:
        return Condition(tensors={"control": control})
    return Condition(cond.labels, cond.text, {**cond.tensors, "control": control})


def check_fits(control: ControlNet, base: nn.Module, name: str = "control model") -> None:
    """A ControlNet feeds a base whose skips have its trunk's widths and strides."""
    if not isinstance(base, UNet):
        raise DifflabError(f"{name}: a ControlNet needs a U-Net base model with residual hooks, got "
                           f"{type(base).__name__}")
    ours, theirs = control.trunk, base
    if (ours.skip_widths, ours.skip_strides) != (theirs.skip_widths, theirs.skip_strides):
        raise DifflabError(f"{name} was made for a U-Net with skips {list(ours.skip_widths)}, but the base model's are "
                           f"{list(theirs.skip_widths)}")


def soft_weights(scale: float, count: int) -> tuple[float, ...]:
    """scale * 0.825^(count - 1 - i) for residual i (skips shallow to deep, then the middle): the original's guess-mode
    weights, which the web UI extension uses for "My prompt is more important" and "ControlNet is more important"."""
    return tuple(scale * SOFT_INJECTION_BASE ** (count - 1 - i) for i in range(count))


@dataclass(frozen=True, eq=False)
class AppliedControl:
    """One ControlNet as sampling applies it: its image's channels in the condition's "control" tensor, its weight
    per residual, and the network inputs c_noise (increasing with sigma) it acts at (None: all)."""

    net: nn.Module
    channels: slice
    weights: tuple[float, ...]
    c_noise_range: tuple[float, float] | None = None

    def active(self, c_noise: torch.Tensor) -> torch.Tensor:
        """[B] bool: rows whose noise level lies in the range."""
        if self.c_noise_range is None:
            return torch.ones(c_noise.shape, dtype=torch.bool, device=c_noise.device)
        low, high = self.c_noise_range
        return (c_noise >= low) & (c_noise <= high)


class ControlledNet(nn.Module):
    """base(x, c_noise, cond) with the residuals of every applied ControlNet summed into its skips and middle.

    The control images ride in cond.tensors["control"] (each ControlNet's on its channels); a row whose control is
    not present (the unconditional half of CFG in "ControlNet is more important", or no control given) gets none.
    """

    def __init__(self, base: UNet, controls: Sequence[AppliedControl]):
        super().__init__()
        self.base = base
        self.controls = list(controls)
        self.control_nets = nn.ModuleList(c.net for c in self.controls)  # so .to(device) moves them
        for c in self.controls:
            count = getattr(c.net, "residual_count", len(c.weights))  # a wrapped (compiled, DDP) net is not checked
            if len(c.weights) != count:
                raise DifflabError(f"control weights: expected {count} (one per residual), got {len(c.weights)}")

    @property
    def config(self) -> UNetConfig:
        return self.base.config

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        control = None if cond is None else cond.tensors.get("control")
        if control is None or not self.controls:
            return self.base(x, c_noise, cond)
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for applied in self.controls:
            present = control.present & applied.active(c_noise)
            if not bool(present.any()):
                continue
            skips, middle = applied.net(x, c_noise, cond, control.value[:, applied.channels], present)
            skips = [w * s for w, s in zip(applied.weights, skips)]
            middle = applied.weights[-1] * middle
            down = skips if down is None else [a + b for a, b in zip(down, skips)]
            mid = middle if mid is None else mid + middle
        return self.base(x, c_noise, cond, down_residuals=down, mid_residual=mid)
