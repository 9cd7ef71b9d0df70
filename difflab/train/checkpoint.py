"""Self-describing checkpoints: one safetensors file holding weights, EMA, optimizer and RNG state, with
the full experiment config in its metadata (and a config.json beside it). Written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.images import atomic_write
from difflab.nets import build_network
from difflab.schedules import DiscreteSchedule
from difflab.train.config import ExperimentConfig

FORMAT = "difflab-checkpoint-1"


@dataclass
class Checkpoint:
    config: ExperimentConfig
    step: int
    tensors: dict[str, torch.Tensor]
    optimizer_groups: list[dict] | None

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors stored under `prefix.` with the prefix removed."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(
    path: str | Path, config: ExperimentConfig, step: int, *, model: nn.Module, ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None, rng: dict[str, torch.Tensor] | None = None,
    scaler: torch.amp.GradScaler | None = None, sections: dict[str, dict[str, torch.Tensor]] | None = None,
) -> None:
    """Write the checkpoint atomically (temporary file, fsync, rename), then config.json beside it.

    `sections` holds further training state (e.g. {"importance": sampler.state_dict()}), read back by
    Checkpoint.section(name).

    Tensors are stored from the CPU, so a checkpoint written on a GPU loads anywhere."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    metadata = {"format": FORMAT, "step": str(step), "config": json.dumps(config.to_dict())}
    if optimizer is not None:
        optim, metadata["optimizer_groups"] = optimizer_tensors(optimizer)
        tensors.update(optim)
    for name, state in (rng or {}).items():
        tensors[f"rng.{name}"] = state
    for section, state in (sections or {}).items():
        tensors.update({f"{section}.{k}": v.detach().cpu().contiguous() for k, v in state.items()})
    if scaler is not None and scaler.is_enabled():  # fp16 loss scale and clean steps since it last grew
        tensors["scaler.scale"] = torch.tensor(scaler.get_scale(), dtype=torch.float64)
        tensors["scaler.growth_tracker"] = torch.tensor(scaler.state_dict()["_growth_tracker"])
    payload = save_bytes(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(payload))
    config_text = json.dumps(config.to_dict(), indent=2).encode()
    atomic_write(Path(path).with_name("config.json"), lambda f: f.write(config_text))


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (on the CPU) and metadata of a safetensors file; missing or damaged files give a DifflabError that
    starts with `what` (e.g. "checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"{what} {path} not found")
    raw = path.read_bytes()
    try:
        tensors = load_bytes(raw)
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8: 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, OverflowError) as err:
        raise DifflabError(f"{what} {path} is damaged or not a safetensors file ({err})") from None
    return tensors, metadata


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint, its tensors on the CPU whatever device wrote them; any damage or foreign file gives a
    DifflabError naming the path."""
    tensors, metadata = read_safetensors(path, "checkpoint")
    if metadata.get("format") != FORMAT:
        raise DifflabError(f"checkpoint {path} is not a difflab checkpoint (format {metadata.get('format')!r})")
    groups = metadata.get("optimizer_groups")
    return Checkpoint(
        config=ExperimentConfig.from_dict(json.loads(metadata["config"])),
        step=int(metadata["step"]),
        tensors=tensors,
        optimizer_groups=None if groups is None else json.loads(groups),
    )


def export_weights(src: str | Path, dst: str | Path, use_ema: bool = True) -> None:
    """Write an inference-only copy of a checkpoint: one set of weights (EMA by default) and the config."""
    denoiser, checkpoint = load_denoiser(src, prefer_ema=use_ema)
    save_checkpoint(dst, checkpoint.config, checkpoint.step, model=denoiser.net)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """The optimizer's state flattened to `optim.{param}.{key}` tensors, and its parameter groups as JSON."""
    state = optimizer.state_dict()
    tensors = {f"optim.{index}.{key}": torch.as_tensor(value).detach().cpu().contiguous()
               for index, param_state in state["state"].items() for key, value in param_state.items()}
    return tensors, json.dumps(state["param_groups"])


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    """An optimizer state_dict from `{param}.{key}` tensors (the `optim` section) and the parameter groups."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def optimizer_state(checkpoint: Checkpoint) -> dict:
    """Rebuild an optimizer state_dict from the checkpoint's flattened `optim.{param}.{key}` tensors."""
    return unflatten_optimizer_state(checkpoint.section("optim"), checkpoint.optimizer_groups)


def load_scaler_state(checkpoint: Checkpoint, scaler: torch.amp.GradScaler) -> None:
    """Restore the fp16 loss scale saved beside the weights (a checkpoint without one leaves `scaler` as is)."""
    if "scaler.scale" in checkpoint.tensors:
        scaler.load_state_dict({**scaler.state_dict(), "scale": float(checkpoint.tensors["scaler.scale"]),
                                "_growth_tracker": int(checkpoint.tensors["scaler.growth_tracker"])})


def init_weights(net: nn.Module, path: str | Path) -> list[str]:
    """Start `net` from a checkpoint's EMA weights (fine-tuning); returns the names of the parameters it lacked.

    Layers the new network adds (e.g. class or text conditioning, zero-initialised where they join the
    residual stream) keep their initialisation; every weight the checkpoint has must fit the network.
    """
    if not Path(path).is_file():
        raise DifflabError(f"--init: checkpoint {path} not found")
    checkpoint = load_checkpoint(path)
    weights = checkpoint.section("ema") or checkpoint.section("model")
    own = net.state_dict()
    extra = sorted(set(weights) - set(own))
    wrong = [k for k in weights if k in own and weights[k].shape != own[k].shape]
    if extra or wrong:
        raise DifflabError(f"--init {path}: its weights do not fit this network (unknown: {extra[:3]}, "
                           f"other shape: {wrong[:3]}); the network config must extend the checkpoint's")
    net.load_state_dict(weights, strict=False)
    return sorted(set(own) - set(weights))


def load_denoiser(path: str | Path, prefer_ema: bool = True) -> tuple[Denoiser, Checkpoint]:
    """The denoiser of a checkpoint (EMA weights when present), in eval mode."""
    checkpoint = load_checkpoint(path)
    config = checkpoint.config
    net = build_network(config.network)
    weights = checkpoint.section("ema") if prefer_ema else {}
    weights = weights or checkpoint.section("model")
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise DifflabError(f"checkpoint {path}: weights do not fit its network config ({str(err).splitlines()[0]})") from None
    return Denoiser(net, DiscreteSchedule(config.schedule), config.prediction).eval(), checkpoint
