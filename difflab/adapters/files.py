"""Adapter files: small component files ("lora", "embedding") holding only the adapter's tensors, its config and a
reference (path + sha256) to the frozen base model it was trained on, which is never copied."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save as save_bytes

from difflab.errors import DifflabError
from difflab.images import atomic_write
from difflab.train.checkpoint import FORMAT, Checkpoint, ComponentRef, load_checkpoint

BASE = "base"  # the name of the base model among a file's refs


def config_fields(cls, spec: dict, what: str) -> dict:
    """`spec` checked against the fields of the config dataclass `cls`; an unknown field is named in one line."""
    unknown = set(spec) - set(cls.__dataclass_fields__)
    if unknown:
        raise DifflabError(f"{what} config: unknown field(s) {', '.join(sorted(unknown))}")
    return spec


def save_adapter(path: str | Path, kind: str, config, tensors: dict[str, torch.Tensor], base: ComponentRef,
                 step: int, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write the adapter atomically: `tensors` as they are, kind, config, step and the base's ref in the metadata."""
    metadata = {**(extra_metadata or {}), "format": FORMAT, "kind": kind, "step": str(step),
                "config": json.dumps(config.to_dict()), "refs": json.dumps({BASE: asdict(base)})}
    payload = save_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write(path, lambda f: f.write(payload))
    return Path(path)


def base_of(checkpoint: Checkpoint, path: str | Path) -> ComponentRef:
    if BASE not in checkpoint.refs:
        raise DifflabError(f"{path} names no base model (refs.{BASE}); it was not written by difflab's adapter "
                           f"training")
    return checkpoint.refs[BASE]


def load_adapter(path: str | Path, kind: str, base_sha256: str | None = None) -> Checkpoint:
    """The adapter file at `path`; with `base_sha256`, one trained on another base is refused in one line."""
    checkpoint = load_checkpoint(path, kind=kind)
    base = base_of(checkpoint, path)
    if base_sha256 is not None and base.sha256 != base_sha256:
        raise DifflabError(f"{kind} {Path(path).name} was trained on another base model ({Path(base.path).name}, "
                           f"sha256 {base.sha256[:10]}), not this one (sha256 {base_sha256[:10]}); use it with its "
                           f"base")
    return checkpoint
