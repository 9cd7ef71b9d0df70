"""Tiny randomly initialised models for the multi-stage tests: a class-conditional 8x8 base and a 16x16
super-resolution model that takes the upsampled 8x8 image (and the class)."""

from __future__ import annotations

import torch

from difflab.denoiser import Denoiser
from difflab.nets import build_network
from difflab.train.checkpoint import build_denoiser, save_checkpoint
from difflab.train.config import ExperimentConfig

CLASSES = ("a", "b", "c")


def tiny_config(size: int, *, low_res: int | None = None, augmentation: float = 0.0, channel_mult=(1, 2),
                classes=CLASSES) -> ExperimentConfig:
    network = {"kind": "unet", "channels": 8, "channel_mult": list(channel_mult), "num_res_blocks": 1,
               "attention_levels": [len(channel_mult) - 1], "head_dim": 8, "groups": 4,
               "num_classes": None if classes is None else len(classes)}
    train = {"cond": "none" if classes is None else "class"}
    if low_res is not None:
        network.update(concat_conditions={"low_res": 1}, noise_level_embedding=True)
        train.update(low_res=low_res, low_res_augmentation=augmentation)
    return ExperimentConfig.from_dict({"network": network, "schedule": {"kind": "linear", "timesteps": 100},
                                       "train": train, "data_shape": [1, size, size], "class_names": classes})


def tiny_denoiser(config: ExperimentConfig, seed: int = 0) -> Denoiser:
    """Every weight drawn at random (std 0.1), so every input and condition changes the output."""
    torch.manual_seed(seed)
    net = build_network(config.network)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return build_denoiser(net, config).eval()


def write_tiny(path, config: ExperimentConfig, seed: int = 0):
    save_checkpoint(path, config, 0, model=tiny_denoiser(config, seed).net)
    return path
