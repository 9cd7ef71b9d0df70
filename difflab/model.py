"""A model a user samples from is a set of named components, loaded by one function from one argument.

The argument is a component file (a denoiser; the frozen components it refers to are checked against their
sha256), or a manifest: a JSON file {"denoiser": "FILE", "classifier": "FILE"} whose paths are relative to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from difflab.denoiser import Denoiser
from difflab.errors import DifflabError
from difflab.train.checkpoint import Checkpoint, load_denoiser
from difflab.train.config import read_json_object

PARTS = ("denoiser", "classifier")  # what a manifest may name; the denoiser is required


@dataclass(frozen=True)
class Model:
    denoiser: Denoiser
    checkpoint: Checkpoint  # the denoiser's file: its config, step and refs
    files: dict[str, Path]  # component name -> file; the classifier is loaded where guidance asks for it


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
        ref.check(name)
    return Model(denoiser, checkpoint, files)

