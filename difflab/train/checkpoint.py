"""Components: one self-describing safetensors file per trained part, written atomically.

A file holds one component: its kind ("denoiser", "classifier", "autoencoder"), its config (in the metadata, and in a
config.json beside it), its weights (`model.*`, and `ema.*`) and, while it trains, the optimizer, RNG and
objective state that --resume continues from. Components it uses but does not train (frozen) are referred to by
path and sha256 in the metadata ("refs"), never copied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from difflab.denoiser import Denoiser, build_precond
from difflab.errors import DifflabError
from difflab.images import atomic_write
from difflab.nets import build_network
from difflab.schedules import DiscreteSchedule
from difflab.train.config import ExperimentConfig

FORMAT = "difflab-checkpoint-1"
LEGACY_CLASSIFIER = "difflab-classifier-1"  # the classifier's own format before components


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class ComponentRef:
    """A frozen component a file uses: its kind, where it was and the sha256 of its bytes."""

    kind: str
    path: str
    sha256: str

    @classmethod
    def to(cls, kind: str, path: str | Path) -> ComponentRef:
        return cls(kind, str(Path(path).resolve()), sha256_file(path))

    def check(self, name: str, path: str | Path | None = None) -> Path:
        """The referred file (or `path`, where it was moved to), after checking it is still the one trained against."""
        path = Path(self.path if path is None else path)
        if not path.is_file():
            raise DifflabError(f"frozen component {name!r} ({self.kind}) not found at {path}")
        if sha256_file(path) != self.sha256:
            raise DifflabError(f"frozen component {name!r} at {path} has changed since it was referred to "
                               f"(sha256 {self.sha256[:10]} expected)")
        return path


def config_from_dict(kind: str, spec: dict):
    """The typed config of a component kind."""
    if kind == "denoiser":
        return ExperimentConfig.from_dict(spec)
    if kind == "classifier":
        from difflab.train.classifier_config import ClassifierSpec

        return ClassifierSpec.from_dict(spec)
    if kind == "autoencoder":
        from difflab.train.autoencoder_config import AutoencoderSpec

        return AutoencoderSpec.from_dict(spec)
    if kind in ("lora", "embedding"):
        from difflab.adapters import ADAPTER_CONFIGS

        return ADAPTER_CONFIGS[kind].from_dict(spec)
    if kind == "controlnet":
        from difflab.train.controlnet import ControlNetSpec

        return ControlNetSpec.from_dict(spec)
    raise DifflabError(f"unknown component kind {kind!r}")


@dataclass
class Checkpoint:
    config: ExperimentConfig  # or the config of another kind (a ClassifierSpec for "classifier")
    step: int
    tensors: dict[str, torch.Tensor]
    optimizer_groups: list[dict] | None
    kind: str = "denoiser"
    refs: dict[str, ComponentRef] = field(default_factory=dict)

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors stored under `prefix.` with the prefix removed."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(
    path: str | Path, config, step: int, *, model: nn.Module, kind: str = "denoiser", ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None, rng: dict[str, torch.Tensor] | None = None,
    scaler: torch.amp.GradScaler | None = None, sections: dict[str, dict[str, torch.Tensor]] | None = None,
    refs: dict[str, ComponentRef] | None = None, extra_metadata: dict[str, str] | None = None,
) -> None:
    """Write the component file atomically (temporary file, fsync, rename), then config.json beside it.

    `config` has to_dict(); `sections` holds further training state (e.g. {"importance": sampler.state_dict()}),
    read back by Checkpoint.section(name); `refs` names the frozen components used; `extra_metadata` adds strings
    (e.g. a classifier's test accuracy).

    Tensors are stored from the CPU, so a checkpoint written on a GPU loads anywhere."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    metadata = {**(extra_metadata or {}), "format": FORMAT, "kind": kind, "step": str(step),
                "config": json.dumps(config.to_dict())}
    if refs:
        metadata["refs"] = json.dumps({name: asdict(ref) for name, ref in refs.items()})
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
    write_component(path, tensors, metadata, config)


def write_component(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], config) -> None:
    """Write the tensors and metadata atomically (temporary file, fsync, rename), then config.json beside them."""
    payload = save_bytes(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(payload))
    config_text = json.dumps(config.to_dict(), indent=2).encode()
    atomic_write(Path(path).with_name("config.json"), lambda f: f.write(config_text))


def rewrite_config(path: str | Path, config) -> None:
    """Record another config in a component file, keeping its tensors and its other metadata."""
    tensors, metadata = read_safetensors(path, "checkpoint")
    write_component(path, tensors, {**metadata, "config": json.dumps(config.to_dict())}, config)


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


def load_checkpoint(path: str | Path, kind: str | None = "denoiser") -> Checkpoint:
    """Read a component file, its tensors on the CPU whatever device wrote them; any damage, foreign file or other
    kind than `kind` (None: any) gives a DifflabError naming the path. Files written before components had kinds
    hold a denoiser."""
    tensors, metadata = read_safetensors(path, "checkpoint")
    if metadata.get("format") == LEGACY_CLASSIFIER:
        raise DifflabError(f"{path} is a classifier in the format before components; convert it once with "
                           f"`difflab convert-classifier {path} NEW.safetensors`")
    if metadata.get("format") != FORMAT:
        raise DifflabError(f"checkpoint {path} is not a difflab checkpoint (format {metadata.get('format')!r})")
    found = metadata.get("kind", "denoiser")
    if kind is not None and found != kind:
        raise DifflabError(f"{path} holds a {found}, not a {kind}")
    groups = metadata.get("optimizer_groups")
    refs = {name: ComponentRef(**ref) for name, ref in json.loads(metadata.get("refs", "{}")).items()}
    return Checkpoint(
        config=config_from_dict(found, json.loads(metadata["config"])),
        step=int(metadata["step"]),
        tensors=tensors,
        optimizer_groups=None if groups is None else json.loads(groups),
        kind=found,
        refs=refs,
    )


def export_weights(src: str | Path, dst: str | Path, use_ema: bool = True) -> None:
    """Write an inference-only copy of a checkpoint: one set of weights (EMA by default) and the config."""
    denoiser, checkpoint = load_denoiser(src, prefer_ema=use_ema)
    save_checkpoint(dst, checkpoint.config, checkpoint.step, model=denoiser.net, refs=checkpoint.refs)


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
        raise DifflabError(f"checkpoint {path}: weights do not fit its network config "
                           f"({str(err).splitlines()[0]})") from None
    return build_denoiser(net, config).eval(), checkpoint


def build_denoiser(net: nn.Module, config: ExperimentConfig) -> Denoiser:
    """The experiment's network inside its preconditioning (VP over its schedule, or EDM)."""
    precond = build_precond(config.precond, DiscreteSchedule(config.schedule), config.prediction)
    return Denoiser(net, precond)


def unfinished_run(path: Path, kind: str) -> Checkpoint:
    """The interrupted `difflab train-<kind>` run saved at path, for --resume."""
    if not path.is_file():
        raise DifflabError(f"--resume: no {kind} checkpoint at {path}")
    checkpoint = load_checkpoint(path, kind=kind)
    if checkpoint.optimizer_groups is None:
        raise DifflabError(f"--resume: {path} holds a finished {kind} (step {checkpoint.step}); nothing to resume")
    return checkpoint
