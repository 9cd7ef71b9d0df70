"""LoRA (Hu et al. 2021): a frozen layer W plus a trainable low-rank update, h = W x + (alpha / r) B A x.

A is r x fan_in (Kaiming-uniform), B is fan_out x r (zero), so a fresh LoRA changes nothing. For a k x k
convolution A is a k x k convolution to r channels with the base layer's stride and padding, and B a 1 x 1
convolution back; the update of the weight is still the rank-r matrix (alpha / r) B A over [fan_out, fan_in k k].

A layer is wrapped (LoraLayer keeps the base layer as it is), never edited; several LoRAs may act on one network at
once, each with its own multiplier, and each can be merged into the base weights and taken out again.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from difflab.adapters.files import config_fields
from difflab.errors import DifflabError

# the attention projections of the U-Net (SelfAttention.qkv/proj, CrossAttention.q/kv/proj, in levels and the
# middle) and of the DiT (Attention.q/kv/proj, also inside TextCrossAttention)
DEFAULT_TARGETS = (r"(.*\.)?(attns\.\d+|cross_attns\.\d+|mid_attn|mid_cross_attn|attn)\.(qkv|q|kv|proj)",)
Adaptable = nn.Linear | nn.Conv2d


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 4  # r
    alpha: float = 4.0  # the update is scaled by alpha / r
    targets: tuple[str, ...] = DEFAULT_TARGETS  # regular expressions matched against whole module names

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.rank <= 0:
            raise DifflabError(f"--rank must be > 0, got {self.rank}")
        if not self.alpha > 0:
            raise DifflabError(f"--alpha must be > 0, got {self.alpha}")
        if not self.targets:
            raise DifflabError("LoRA targets: give at least one module-name pattern")
        for pattern in self.targets:
            try:
                re.compile(pattern)
            except re.error as err:
                raise DifflabError(f"LoRA target pattern {pattern!r} is not a regular expression ({err})") from None

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> LoraConfig:
        return cls(**config_fields(cls, spec, "LoRA"))


class LoraUpdate(nn.Module):
    """The update of one layer: lora_A [r, fan_in (x k x k)], lora_B [fan_out, r] and the scale alpha / r."""

    def __init__(self, base: Adaptable, rank: int, scaling: float):
        super().__init__()
        if isinstance(base, nn.Conv2d) and base.groups != 1:
            raise DifflabError("LoRA: grouped convolutions are not supported")
        fan_in = base.weight[0].numel()
        self.lora_A = nn.Parameter(torch.empty(rank, fan_in, dtype=base.weight.dtype, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.weight.shape[0], rank, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear's own weights (and peft's A)
        self.scaling = scaling
        self.weight_shape = tuple(base.weight.shape)
        self.conv = (base.stride, base.padding, base.dilation) if isinstance(base, nn.Conv2d) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling  # (alpha / r) B A x
        stride, padding, dilation = self.conv
        down = F.conv2d(x, self.lora_A.view(-1, *self.weight_shape[1:]), None, stride, padding, dilation)
        return F.conv2d(down, self.lora_B[:, :, None, None]) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A in the base weight's shape."""
        return (self.scaling * self.lora_B @ self.lora_A).view(self.weight_shape)


class LoraLayer(nn.Module):
    """A base layer and the LoRAs acting on it: base(x) + sum_i m_i (alpha_i / r_i) B_i A_i x over the LoRAs not
    merged into the base weights (those already are, with their multipliers)."""

    def __init__(self, base: Adaptable):
        super().__init__()
        self.base = base
        self.active: dict[str, tuple[LoraUpdate, float]] = {}  # name -> (update, multiplier); held by their Lora
        self.merged: set[str] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)
        for name, (update, multiplier) in self.active.items():
            if name not in self.merged:
                h = h + multiplier * update(x)
        return h

    def merge(self, name: str) -> None:
        """W <- W + m (alpha / r) B A."""
        if name not in self.merged:
            update, multiplier = self.active[name]
            with torch.no_grad():
                self.base.weight += multiplier * update.delta_weight().to(self.base.weight.dtype)
            self.merged.add(name)

    def unmerge(self, name: str) -> None:
        """W <- W - m (alpha / r) B A (the original weights up to float rounding)."""
        if name in self.merged:
            update, multiplier = self.active[name]
            with torch.no_grad():
                self.base.weight -= multiplier * update.delta_weight().to(self.base.weight.dtype)
            self.merged.discard(name)


def target_layers(net: nn.Module, targets: tuple[str, ...]) -> dict[str, Adaptable]:
    """The linear and convolution layers of `net` whose names match one of the patterns (a layer already wrapped in
    a LoraLayer under its own name)."""
    patterns = [re.compile(p) for p in targets]
    found = {}
    for name, module in net.named_modules():
        if isinstance(module, LoraLayer):
            module = module.base
        elif name.endswith(".base") and isinstance(net.get_submodule(name.rsplit(".", 1)[0]), LoraLayer):
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)) and any(p.fullmatch(name) for p in patterns):
            found[name] = module
    return found


class Lora(nn.Module):
    """One LoRA over a network: an update per target layer, by the layer's name. Its parameters are the adapter's
    only (what it trains and what its file holds)."""

    def __init__(self, net: nn.Module, config: LoraConfig = LoraConfig()):
        super().__init__()
        self.config = config
        layers = target_layers(net, config.targets)
        if not layers:
            raise DifflabError(f"LoRA targets {list(config.targets)} match no linear or convolution layer of the "
                               f"network")
        self.layer_names = tuple(layers)
        self.updates = nn.ModuleList(LoraUpdate(layer, config.rank, config.scaling) for layer in layers.values())

    def named_updates(self) -> dict[str, LoraUpdate]:
        return dict(zip(self.layer_names, self.updates))

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """{layer.lora_A, layer.lora_B} on the CPU: what an adapter file holds."""
        return {f"{name}.lora_{part}": getattr(update, f"lora_{part}").detach().cpu().contiguous()
                for name, update in self.named_updates().items() for part in "AB"}

    def load_adapter_tensors(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        expected = {f"{name}.lora_{part}" for name in self.layer_names for part in "AB"}
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise DifflabError(f"{source}: its tensors do not fit this network's LoRA layers (missing {missing[:3]}, "
                               f"unknown {extra[:3]})")
        for name, update in self.named_updates().items():
            for part in "AB":
                param = getattr(update, f"lora_{part}")
                value = tensors[f"{name}.lora_{part}"]
                if value.shape != param.shape:
                    raise DifflabError(f"{source}: {name}.lora_{part} has shape {tuple(value.shape)}, the network "
                                       f"needs {tuple(param.shape)}")
                with torch.no_grad():
                    param.copy_(value)


def wrapped(net: nn.Module, name: str) -> LoraLayer:
    """The LoraLayer at `name`, wrapping the layer there first if needed."""
    module = net.get_submodule(name)
    if isinstance(module, LoraLayer):
        return module
    parent, _, leaf = name.rpartition(".")
    layer = LoraLayer(module)
    setattr(net.get_submodule(parent) if parent else net, leaf, layer)
    return layer


def attach(net: nn.Module, lora: Lora, name: str, multiplier: float = 1.0) -> None:
    """Let `lora` act on `net` under `name`, scaled by `multiplier` (A1111's <lora:NAME:multiplier>)."""
    for layer_name, update in lora.named_updates().items():
        layer = wrapped(net, layer_name)
        if name in layer.active:
            raise DifflabError(f"a LoRA named {name!r} is already attached")
        layer.active[name] = (update, multiplier)


def lora_layers(net: nn.Module) -> dict[str, LoraLayer]:
    return {name: m for name, m in net.named_modules() if isinstance(m, LoraLayer)}


def detach(net: nn.Module, name: str) -> None:
    """Take the LoRA `name` off (unmerged first); layers left with no LoRA get their base layer back."""
    for layer_name, layer in lora_layers(net).items():
        if name in layer.active:
            layer.unmerge(name)
            del layer.active[name]
        if not layer.active:
            parent, _, leaf = layer_name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, layer.base)


def detach_all(net: nn.Module) -> None:
    for name in {n for layer in lora_layers(net).values() for n in layer.active}:
        detach(net, name)


def merge(net: nn.Module, name: str) -> None:
    """Fold the LoRA `name` into the base weights (sampling then costs what the base network costs)."""
    for layer in lora_layers(net).values():
        if name in layer.active:
            layer.merge(name)


def unmerge(net: nn.Module, name: str) -> None:
    for layer in lora_layers(net).values():
        if name in layer.active:
            layer.unmerge(name)


def attached(net: nn.Module) -> dict[str, float]:
    """The LoRAs acting on `net`: name -> multiplier."""
    return {name: multiplier for layer in lora_layers(net).values()
            for name, (_, multiplier) in layer.active.items()}
