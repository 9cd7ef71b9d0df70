"""A noise-aware classifier p_phi(y | x_t, t): the U-Net's encoder and middle, pooled, with a linear head
(Dhariwal & Nichol 2021, Sec. 4 and Appendix: the downsampling trunk of the diffusion U-Net with attention pooling)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import DifflabError
from difflab.nets.unet import UNetConfig, UNetTrunk

Pool = Literal["attention", "mean"]


@dataclass(frozen=True)
class ClassifierConfig:
    trunk: UNetConfig = UNetConfig(channels=24, num_res_blocks=1, head_dim=24)  # its decoder fields are unused
    num_classes: int = 10
    pool: Pool = "attention"

    def __post_init__(self) -> None:
        widths = list(self.trunk.widths)
        if any(w % max(1, w // self.trunk.head_dim) for w in widths):
            raise DifflabError(f"classifier: every width {widths} must split into heads of about head_dim="
                               f"{self.trunk.head_dim} channels")
        if self.trunk.num_classes is not None or self.trunk.text_dim is not None:
            raise DifflabError("classifier.trunk: a classifier sees no labels or text; leave num_classes and "
                               "text_dim unset")
        if self.num_classes < 2:
            raise DifflabError(f"classifier.num_classes must be >= 2, got {self.num_classes}")
        if self.pool not in ("attention", "mean"):
            raise DifflabError(f"classifier.pool must be attention or mean, got {self.pool!r}")

    @classmethod
    def from_dict(cls, spec: dict) -> ClassifierConfig:
        """The inverse of dataclasses.asdict: {"trunk": {UNetConfig's fields}, "num_classes": ..., "pool": ...}."""
        return cls(UNetConfig(**spec["trunk"]), **{k: v for k, v in spec.items() if k != "trunk"})


class AttentionPool(nn.Module):
    """[B, C, H, W] -> [B, C]: multi-head attention of one query, the mean feature, over all H*W positions (ADM's /
    CLIP's attention pooling, without the fixed-size positional embedding, so any H, W works); the head that
    follows is the output projection."""

    def __init__(self, channels: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, C = h.shape[:2]
        tokens = F.silu(self.norm(h)).flatten(2).transpose(1, 2)  # [B, HW, C]
        q = self.q(tokens.mean(1, keepdim=True)).reshape(B, 1, self.heads, C // self.heads).transpose(1, 2)
        k, v = self.kv(tokens).reshape(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        pooled = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, [B, heads, 1, C/heads]
        return pooled.reshape(B, C)


class MeanPool(nn.Module):
    """[B, C, H, W] -> [B, C]: GroupNorm, SiLU, mean over the positions."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(h)).mean(dim=(2, 3))


class NoiseAwareClassifier(nn.Module):
    """net(x_t [B, C, H, W], c_noise [B]) -> class logits [B, num_classes]; any H, W."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.trunk = UNetTrunk(config.trunk)
        c = self.trunk.skip_widths[-1]
        self.pool = (AttentionPool(c, config.trunk.head_dim, config.trunk.groups) if config.pool == "attention"
                     else MeanPool(c, config.trunk.groups))
        self.head = nn.Linear(c, config.num_classes)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.trunk.features(x, c_noise).h))


def legacy_module_names(trunk: UNetConfig) -> dict[str, str]:
    """Old module name -> new for the flat classifier of difflab-classifier-1 files: its trunk was one list
    `blocks` (per level: [ResBlock, SelfAttention if an attention level] per block, then the downsampling conv)
    and `mid` = [ResBlock, SelfAttention, ResBlock]."""
    names = {"embed": "trunk.embed", "conv_in": "trunk.conv_in",
             "mid.0": "trunk.mid1", "mid.1": "trunk.mid_attn", "mid.2": "trunk.mid2"}
    blocks = []
    for level in range(len(trunk.channel_mult)):
        for k in range(trunk.num_res_blocks):
            blocks.append(f"trunk.down.{level}.blocks.{k}")
            if level in trunk.attention_levels:
                blocks.append(f"trunk.down.{level}.attns.{k}")
        if level < len(trunk.channel_mult) - 1:
            blocks.append(f"trunk.downsample.{level}")
    return names | {f"blocks.{i}": name for i, name in enumerate(blocks)}


def convert_legacy_classifier(config_dict: dict, weights: dict[str, torch.Tensor]
                              ) -> tuple[ClassifierConfig, dict[str, torch.Tensor]]:
    """A classifier of the old flat format (its config's fields as stored in metadata["config"]["network"], and
    its state dict without the optimizer state) as the new config and state dict; the logits are unchanged."""
    fields = dict(config_dict)
    head = {name: fields.pop(name) for name in ("num_classes", "pool") if name in fields}
    config = ClassifierConfig(UNetConfig(**fields), **head)
    names = legacy_module_names(config.trunk)

    def renamed(key: str) -> str:
        old = next((old for old in names if key.startswith(old + ".")), None)
        return key if old is None else names[old] + key[len(old):]  # pool and head keep their names

    return config, {renamed(k): v for k, v in weights.items()}
