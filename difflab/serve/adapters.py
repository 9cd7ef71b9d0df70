"""LoRAs and textual-inversion embeddings on the server, as the web UI has them.

- A prompt's extra-network tags `<lora:NAME:MULTIPLIER>` (modules/extra_networks.py: `<KIND:ARG:ARG...>`, positional
  te and unet multipliers or `te=` / `unet=`) are taken out of the text the encoder sees; the LoRAs of --lora-dir they
  name act on the network for that request only. An unknown name (or one trained on another base) is a warning in
  `info`, as the UI's "Lora not found"; other kinds (hypernet, ...) are ignored with a warning.
- The embeddings of --embeddings-dir are loaded into the text encoder at start (and by refresh); a prompt uses one by
  writing its token.
- GET /sdapi/v1/loras ([{name, alias, path, metadata}]), POST /sdapi/v1/refresh-loras, GET /sdapi/v1/embeddings
  ({loaded: {name: {step, sd_checkpoint, sd_checkpoint_name, shape, vectors}}, skipped: {...}}) and POST
  /sdapi/v1/refresh-embeddings, in the UI's shapes (extensions-builtin/Lora/scripts/lora_script.py,
  modules/api/api.py get_embeddings).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from difflab.adapters.embedding import LoadedEmbedding, forget_embedding, load_embedding, use_embedding
from difflab.adapters.lora import attach, detach
from difflab.adapters.use import read_lora
from difflab.errors import DifflabError
from difflab.model import component_files
from difflab.serve.model import ServedModel
from difflab.train.checkpoint import read_safetensors, sha256_file

EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # the web UI's re_extra_net


@dataclass(frozen=True)
class LoraTag:
    name: str
    multiplier: float  # the unet multiplier: difflab's LoRAs adapt the denoiser only


def parse_prompt(prompt: str) -> tuple[str, list[LoraTag], list[str]]:
    """The prompt without its extra-network tags, the <lora:...> tags, and a warning for each tag not understood.

    <lora:NAME>, <lora:NAME:TE>, <lora:NAME:TE:UNET>, <lora:NAME:unet=M>; the unet multiplier defaults to the te one,
    which defaults to 1 (the UI's extra_networks_default_multiplier)."""
    tags, warnings = [], []

    def take(match: re.Match) -> str:
        kind, args = match[1], match[2].split(":")
        if kind != "lora":
            warnings.append(f"<{kind}:...> ignored: difflab has no {kind!r} extra networks")
            return ""
        positional = [a for a in args if "=" not in a]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        try:
            te = float(positional[1]) if len(positional) > 1 else float(named.get("te", 1.0))
            unet = float(positional[2]) if len(positional) > 2 else float(named.get("unet", te))
        except ValueError:
            warnings.append(f"{match[0]} ignored: its multipliers must be numbers")
            return ""
        tags.append(LoraTag(positional[0].strip() if positional else "", unet))
        return ""

    return EXTRA_NETWORK.sub(take, prompt), tags, warnings


@dataclass(frozen=True)
class LoraFile:
    name: str
    path: Path
    metadata: dict[str, str]

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.name, "path": str(self.path), "metadata": self.metadata}


class Adapters:
    """The LoRAs of `lora_dir` (listed, read per request) and the embeddings of `embeddings_dir` (loaded into the
    text encoder)."""

    def __init__(self, lora_dir: Path | None = None, embeddings_dir: Path | None = None):
        self.lora_dir, self.embeddings_dir = lora_dir, embeddings_dir
        self.loras: dict[str, LoraFile] = {}
        self.embeddings: dict[str, LoadedEmbedding] = {}
        self.skipped: dict[str, str] = {}  # embedding file name -> why it was not loaded
        self._base_hashes: dict[Path, str] = {}
        self._lock = threading.Lock()
        self.refresh_loras()
        self.refresh_embeddings()

    def refresh_loras(self) -> None:
        """Rescan --lora-dir: every *.safetensors below it, by file stem (the UI's LoRA name)."""
        found = {}
        for path in sorted(self.lora_dir.rglob("*.safetensors")) if self.lora_dir else []:
            try:
                _, metadata = read_safetensors(path, "lora")
            except DifflabError:
                continue
            if metadata.get("kind") == "lora":
                found.setdefault(path.stem, LoraFile(path.stem, path, metadata))
        self.loras = found

    def refresh_embeddings(self) -> None:
        """(Re)load every embedding of --embeddings-dir into the text encoder, by its token; a file that cannot be
        used is listed as skipped."""
        if self.embeddings_dir is None:
            return
        from difflab.text.encoder import text_encoder

        encoder = text_encoder()
        for token in self.embeddings:
            forget_embedding(encoder, token)
        loaded, skipped = {}, {}
        for path in sorted(self.embeddings_dir.rglob("*.safetensors")):
            try:
                embedding = load_embedding(path)
            except DifflabError as err:
                skipped[path.stem] = str(err)
                continue
            loaded.setdefault(embedding.token, embedding)
        for embedding in loaded.values():
            use_embedding(encoder, embedding.token, embedding.vectors)
        self.embeddings, self.skipped = loaded, skipped

    def base_sha256(self, model: ServedModel) -> str:
        """The sha256 of the model's denoiser file, which a LoRA's base ref names (a manifest's own hash is not)."""
        path = component_files(model.path)["denoiser"]
        with self._lock:
            if path not in self._base_hashes:
                self._base_hashes[path] = model.sha256 if path == model.path else sha256_file(path)
            return self._base_hashes[path]

    def take(self, prompt: str, model: ServedModel) -> tuple[str, list[tuple[LoraFile, float]], list[str]]:
        """The prompt for the encoder, the LoRAs it names that fit `model`, and warnings for the rest."""
        text, tags, warnings = parse_prompt(prompt)
        found, missing = [], []
        for tag in tags:
            if tag.name in self.loras:
                found.append((self.loras[tag.name], tag.multiplier))
            else:
                missing.append(tag.name)
        if missing:
            warnings.append(f"Lora not found: {', '.join(missing)}")
        return text, found, warnings

    @contextlib.contextmanager
    def applied(self, model: ServedModel, loras: list[tuple[LoraFile, float]]) -> Iterator[list[str]]:
        """The LoRAs attached to the model's network while the block runs (on the worker: one request at a time);
        yields a warning for each that could not be (another base, a damaged file)."""
        net, warnings, names = model.denoiser.net, [], []
        for lora, multiplier in loras:
            try:
                attach(net, read_lora(lora.path, net, self.base_sha256(model)), lora.name, multiplier)
                names.append(lora.name)
            except DifflabError as err:
                warnings.append(f"Lora {lora.name} skipped: {err}")
        try:
            yield warnings
        finally:
            for name in names:
                detach(net, name)

    def embeddings_json(self, model: ServedModel) -> dict[str, Any]:
        """The UI's answer for the current model: every embedding is loaded for a text model, skipped otherwise."""

        def item(embedding: LoadedEmbedding) -> dict[str, Any]:
            base = embedding.checkpoint.refs["base"]
            return {"step": embedding.checkpoint.step, "sd_checkpoint": base.sha256[:10],
                    "sd_checkpoint_name": Path(base.path).parent.name, "shape": embedding.vectors.shape[1],
                    "vectors": embedding.vectors.shape[0]}

        usable = model.conditioning == "text"
        skipped = {name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None,
                          "vectors": None, "reason": reason} for name, reason in self.skipped.items()}
        if not usable:
            skipped.update({token: {**item(e), "reason": f"model {model.name} takes no text prompts"}
                            for token, e in self.embeddings.items()})
        return {"loaded": {token: item(e) for token, e in self.embeddings.items()} if usable else {},
                "skipped": skipped}


def adapter_routes(adapters: Adapters, current) -> APIRouter:
    """The listing routes; `current()` is the model being served."""
    router = APIRouter(prefix="/sdapi/v1", tags=["adapters"])

    @router.get("/loras")
    async def loras() -> list[dict]:
        """The LoRAs of --lora-dir: name (what <lora:NAME:M> names), alias, path and the file's metadata."""
        return [lora.json() for lora in adapters.loras.values()]

    @router.post("/refresh-loras")
    async def refresh_loras() -> None:
        """Rescan --lora-dir."""
        adapters.refresh_loras()

    @router.get("/embeddings")
    async def embeddings() -> dict:
        """The textual-inversion embeddings of --embeddings-dir, by token; those that could not be loaded are
        skipped (with the reason)."""
        return adapters.embeddings_json(current())

    @router.post("/refresh-embeddings")
    async def refresh_embeddings() -> None:
        """Reload --embeddings-dir."""
        adapters.refresh_embeddings()

    return router
