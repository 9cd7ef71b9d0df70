"""The checkpoints a server generates from: a file with its display name and hash, and once loaded its denoiser and
config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.pipelines.conditions import accepted
from difflab.pipelines.generate import Decode
from difflab.text.encoder import text_encoder
from difflab.model import load_model
from difflab.train.checkpoint import sha256_file
from difflab.train.config import ExperimentConfig


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file as the web UI lists it: path, display name, hash."""

    path: Path
    name: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def title(self) -> str:
        """The web UI's checkpoint title: "name [short hash]"."""
        return f"{self.name} [{self.short_hash}]"

    @property
    def short_title(self) -> str:
        """The web UI's short title (its infotext's "Hires checkpoint"): "file stem [short hash]"."""
        return f"{self.path.stem} [{self.short_hash}]"

    def spellings(self) -> tuple[str, ...]:
        """What a client may call it, as the web UI's checkpoint aliases: the title, the name, the file name (with
        or without .safetensors), the path, the hash or short hash."""
        return (self.title, self.name, self.path.name, self.path.stem, str(self.path), self.sha256, self.short_hash)


@dataclass(frozen=True)
class ServedModel(Checkpoint):
    """A loaded checkpoint: its denoiser and config (and a latent model's decoder and image shape)."""

    denoiser: Denoiser
    config: ExperimentConfig
    decode: Decode | None = None  # difflab.model.Model.decoder: None for a pixel model
    encode: Decode | None = None  # images -> latents, difflab.model.Model.encode: None for a pixel model
    image_shape: tuple[int, ...] | None = None  # the images made; None: config.data_shape (a pixel model)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.image_shape or tuple(self.config.data_shape)

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
        return self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]


RUN_FILE_STEMS = ("checkpoint", "model", "student")  # train, export and distill write these names in their --out


def checkpoint_name(path: Path, root: Path | None = None) -> str:
    """A checkpoint's display name: its path below `root` (default: its folder) without the suffix; the files that
    difflab's runs name alike (checkpoint, model, student .safetensors) are named by their folder."""
    relative = path.relative_to(root) if root is not None else Path(path.name)
    named = relative.parent if path.stem in RUN_FILE_STEMS else relative.with_suffix("")
    return (named.as_posix() if named != Path(".") else "") or path.parent.name


def load_served_model(path: str | Path, name: str | None = None) -> ServedModel:
    """Load an image checkpoint (named `name`, default checkpoint_name); points (toy 2-D data) cannot be served as
    pictures."""
    path = Path(path)
    model = load_model(path)
    denoiser, checkpoint = model.denoiser, model.checkpoint
    shape = model.image_shape
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DifflabError(f"checkpoint {path} makes samples of shape {list(shape)}; serve needs images "
                           f"[channels 1 or 3, height, width]")
    if "text" in accepted(checkpoint.config):
        text_encoder()  # load the prompt encoder now rather than in the first request
    return ServedModel(path=path.resolve(), name=name or checkpoint_name(path), sha256=sha256_file(path),
                       denoiser=denoiser, config=checkpoint.config, decode=model.decoder, image_shape=shape,
                       encode=None if model.decoder is None else model.encode)
