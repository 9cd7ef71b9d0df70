"""Network configs and the factory that builds a network from its JSON-able config."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from difflab.errors import DifflabError
from difflab.nets.dit import DiT, DiTConfig
from difflab.nets.mlp import MLPConfig, MLPDenoiserNet
from difflab.nets.unet import UNet, UNetConfig

NETWORKS = {"unet": (UNetConfig, UNet), "dit": (DiTConfig, DiT), "mlp": (MLPConfig, MLPDenoiserNet)}
NetworkConfig = UNetConfig | DiTConfig | MLPConfig


def network_config(spec: dict[str, Any]) -> NetworkConfig:
    """Parse {'kind': 'unet'|'dit'|'mlp', **fields} into the typed config, naming any unknown field."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in NETWORKS:
        raise DifflabError(f"network.kind must be one of {', '.join(NETWORKS)}, got {kind!r}")
    config_cls = NETWORKS[kind][0]
    unknown = set(spec) - set(config_cls.__dataclass_fields__)
    if unknown:
        raise DifflabError(f"network: unknown field(s) {', '.join(sorted(unknown))} for kind {kind!r}")
    return config_cls(**spec)


def network_spec(config: NetworkConfig) -> dict[str, Any]:
    """The JSON form of a network config (inverse of network_config)."""
    kind = next(k for k, (cls, _) in NETWORKS.items() if isinstance(config, cls))
    return {"kind": kind, **asdict(config)}


def build_network(config: NetworkConfig) -> nn.Module:
    return NETWORKS[network_spec(config)["kind"]][1](config)
