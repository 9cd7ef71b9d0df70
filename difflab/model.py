"""A model a user samples from is a set of named components, loaded by one function from one argument.

The argument is a component file (a denoiser; the frozen components it refers to are checked against their
sha256), or a manifest: a JSON file {"denoiser": "FILE", "classifier": "FILE", "autoencoder": "FILE"} whose paths are
relative to it. A manifest's file for a component the denoiser refers to replaces the referred path (the bundled
models travel), and must have the referred sha256.

A latent model (one trained with `difflab train --autoencoder`) samples in its autoencoder's latent space; encode(),
decode() and sample_shape hide the difference from everything downstream (identity and the data shape for a pixel
model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.latent import LatentSpace, load_autoencoder
from difflab.train.checkpoint import Checkpoint, load_denoiser
from difflab.train.config import read_json_object

PARTS = ("denoiser", "classifier", "autoencoder")  # what a manifest may name; the denoiser is required


@dataclass(frozen=True)
class Model:
    denoiser: Denoiser
    checkpoint: Checkpoint  # the denoiser's file: its config, step and refs
    files: dict[str, Path]  # component name -> file; the classifier is loaded where guidance asks for it
    latent: LatentSpace | None = None  # the frozen autoencoder of a latent model; None for a pixel model

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, *image_shape] in [-1, 1] -> what the denoiser models: scaled latent means, or the images."""
        return images if self.latent is None else self.latent.encode(images)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """What the sampler returns -> images: the autoencoder's decoder, or the identity."""
        return x if self.latent is None else self.latent.decode(x)

    @property
    def decoder(self):
        """generate()'s `decode` argument: None (identity) for a pixel model."""
        return None if self.latent is None else self.decode

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One example as the sampler sees it: the latent shape, or the data shape."""
        return tuple(self.checkpoint.config.data_shape)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.sample_shape if self.latent is None else self.latent.image_shape

    def to(self, device: torch.device | str) -> Model:
        """The model with its denoiser and autoencoder on `device` (moved in place)."""
        self.denoiser.to(device)
        if self.latent is not None:
            self.latent.to(device)
        return self


def component_files(path: str | Path) -> dict[str, Path]:
    """The files of the model at `path`: {"denoiser": path} for a component file, the manifest's entries else."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        return {"denoiser": path}
    manifest = read_json_object(path, "model manifest")
    if "denoiser" not in manifest:
        raise DifflabError(f"model manifest: {path} must name a \"denoiser\" file")
    unknown = set(manifest) - set(PARTS)
    if unknown:
        raise DifflabError(f"model manifest {path}: unknown part(s) {', '.join(sorted(unknown))}; parts are "
                           f"{', '.join(PARTS)}")
    return {name: path.parent / str(file) for name, file in manifest.items()}


def load_model(path: str | Path) -> Model:
    """The model at `path`: its denoiser (EMA weights, eval mode), its frozen components checked, its files."""
    files = component_files(path)
    denoiser, checkpoint = load_denoiser(files["denoiser"])
    for name, ref in checkpoint.refs.items():
        files[name] = ref.check(name, files.get(name))
    if "autoencoder" in files and "autoencoder" not in checkpoint.refs:
        raise DifflabError(f"model manifest {path}: names an autoencoder, but its denoiser was trained on pixels")
    latent = load_autoencoder(files["autoencoder"]) if "autoencoder" in files else None
    return Model(denoiser, checkpoint, files, latent)

