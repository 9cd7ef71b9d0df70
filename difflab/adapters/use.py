"""Adapters at sampling time: LoRA files attached to a model's network (each with a multiplier) and embedding files
loaded into the text encoder, for `difflab sample` and the server."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from difflab.adapters.embedding import load_embedding, use_embedding
from difflab.adapters.files import load_adapter
from difflab.adapters.lora import Lora, attach
from difflab.errors import DifflabError
from difflab.model import Model
from difflab.train.checkpoint import sha256_file


def read_lora(path: str | Path, net: nn.Module, base_sha256: str) -> Lora:
    """The LoRA in `path`, built over `net` (frozen); a file trained on another base is refused in one line."""
    checkpoint = load_adapter(path, "lora", base_sha256)
    lora = Lora(net, checkpoint.config)
    lora.load_adapter_tensors(checkpoint.tensors, f"lora {path}")
    return lora.to(next(net.parameters()).device).requires_grad_(False)


def parse_lora_argument(text: str) -> tuple[Path, float]:
    """--lora FILE or FILE:MULTIPLIER (default 1)."""
    path, sep, weight = text.rpartition(":")
    if sep and not Path(text).is_file():
        try:
            return Path(path), float(weight)
        except ValueError:
            pass
    return Path(text), 1.0


def apply_adapters(model: Model, loras: list[str] | None = None, embeddings: list[str] | None = None) -> list[str]:
    """Attach each --lora FILE[:MULTIPLIER] to the model's network and load each --embedding FILE into the text
    encoder; returns a line per adapter."""
    lines = []
    if loras:
        net, sha = model.denoiser.net, sha256_file(model.files["denoiser"])
        for text in loras:
            path, multiplier = parse_lora_argument(text)
            if not path.is_file():
                raise DifflabError(f"--lora: file {path} not found")
            attach(net, read_lora(path, net, sha), str(path), multiplier)
            lines.append(f"lora {path.name} x {multiplier:g}")
    if embeddings:
        from difflab.text.encoder import text_encoder

        for path in embeddings:
            loaded = load_embedding(path)
            use_embedding(text_encoder(), loaded.token, loaded.vectors)
            lines.append(f"embedding {loaded.token} ({len(loaded.vectors)} vector(s)) from {Path(path).name}")
    return lines
