"""The one checkpoint a server generates from: its denoiser, config, display name and hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.pipelines.conditions import accepted
from difflab.text.encoder import text_encoder
from difflab.model import load_model
from difflab.train.config import ExperimentConfig


@dataclass(frozen=True)
class ServedModel:
    denoiser: Denoiser
    config: ExperimentConfig
    name: str
    filename: str
    sha256: str

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.config.class_names

    @property
    def conditioning(self) -> str:
        """What a prompt is to this model: 'none' (ignored), 'class' (a class name) or 'text' (free text)."""
        kinds = accepted(self.config)
        return "text" if "text" in kinds else "class" if "class" in kinds else "none"

    @property
    def channels(self) -> int:
        return self.config.data_shape[0]

    @property
    def height(self) -> int:
        return self.config.data_shape[1]

    @property
    def width(self) -> int:
        return self.config.data_shape[2]


def load_served_model(path: str | Path) -> ServedModel:
    """Load an image checkpoint; points (toy 2-D data) cannot be served as pictures."""
    path = Path(path)
    model = load_model(path)
    denoiser, checkpoint = model.denoiser, model.checkpoint
    shape = checkpoint.config.data_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DifflabError(f"checkpoint {path} makes samples of shape {list(shape)}; serve needs images "
                           f"[channels 1 or 3, height, width]")
    # checkpoint.safetensors / model.safetensors are named by their folder
    name = path.parent.name if path.stem in ("checkpoint", "model") else path.stem
    if "text" in accepted(checkpoint.config):
        text_encoder()  # load the prompt encoder now rather than in the first request
    return ServedModel(denoiser, checkpoint.config, name, path.name, hashlib.sha256(path.read_bytes()).hexdigest())
