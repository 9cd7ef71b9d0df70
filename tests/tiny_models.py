"""Tiny U-Nets with every weight drawn at random (zero-initialised layers too, so every layer matters), for tests."""

from pathlib import Path

import torch

from difflab.nets import build_network
from difflab.train.checkpoint import save_checkpoint
from difflab.train.config import ExperimentConfig

TINY_UNET = {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [1],
             "head_dim": 8, "groups": 4}


def write_random_model(path: Path, config: dict, seed: int = 0, std: float = 0.1) -> Path:
    """Save the network of `config` (ExperimentConfig.from_dict's shape) with N(0, std^2) weights at path."""
    experiment = ExperimentConfig.from_dict(config)
    torch.manual_seed(seed)
    net = build_network(experiment.network)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=std)
    save_checkpoint(path, experiment, 0, model=net)
    return path
