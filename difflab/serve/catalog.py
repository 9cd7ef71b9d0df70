"""The checkpoints a server offers (GET /sdapi/v1/sd-models): the one it started with, those found in --models-dir
(rescanned by POST /sdapi/v1/refresh-checkpoints) and the bundled ones; which one is current, and a small cache of
loaded ones."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from difflab.errors import DifflabError
from difflab.pipelines.dialect import RequestError
from difflab.serve.model import Checkpoint, ServedModel, checkpoint_name, load_served_model
from difflab.train.checkpoint import sha256_file

LOADED_MODELS = 2  # kept in memory: the current one and the last other one a request used


class Catalog:
    def __init__(self, first: ServedModel, models_dir: Path | None = None, bundled: Sequence[Path] = ()):
        self.models_dir, self.bundled = models_dir, tuple(bundled)
        self._first = Checkpoint(first.path, first.name, first.sha256)  # the file, without the loaded model
        self._lock = threading.Lock()
        self._hashes: dict[tuple[Path, int, float], str] = {}
        self._loaded: OrderedDict[Path, ServedModel] = OrderedDict({self._first.path: first})
        self.current = first
        self.checkpoints: list[Checkpoint] = []
        self.refresh()

    def refresh(self) -> list[Checkpoint]:
        """Rescan --models-dir: the first checkpoint, then the folder's *.safetensors (sorted), then the bundled."""
        found = sorted(self.models_dir.rglob("*.safetensors")) if self.models_dir is not None else []
        entries, seen = [self._first], {self._first.path}
        for path, root in [(path, self.models_dir) for path in found] + [(path, None) for path in self.bundled]:
            path = path.resolve()
            if path not in seen and path.is_file():
                seen.add(path)
                entries.append(Checkpoint(path, checkpoint_name(path, root), self._sha256(path)))
        self.checkpoints = entries
        return entries

    def _sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    def find(self, title: str, field: str = "sd_model_checkpoint") -> Checkpoint:
        """The checkpoint a client names; an unknown name is a RequestError naming the `field`."""
        for checkpoint in self.checkpoints:
            if title in checkpoint.spellings():
                return checkpoint
        raise RequestError(field, f"unknown checkpoint {title!r}: {field} must be one of "
                                  f"{', '.join(c.title for c in self.checkpoints)} (GET /sdapi/v1/sd-models; POST "
                                  f"/sdapi/v1/refresh-checkpoints rescans --models-dir)")

    def load(self, checkpoint: Checkpoint, field: str = "sd_model_checkpoint") -> ServedModel:
        """The loaded model of a checkpoint (from the cache when there); one that cannot be served is a RequestError."""
        with self._lock:
            if checkpoint.path in self._loaded:
                self._loaded.move_to_end(checkpoint.path)
                return self._loaded[checkpoint.path]
        try:
            model = load_served_model(checkpoint.path, checkpoint.name)
        except (DifflabError, KeyError, ValueError, OSError) as err:  # not a difflab image checkpoint
            raise RequestError(field, f"{field} {checkpoint.title!r} cannot be served: {err}") from None
        with self._lock:
            self._loaded[checkpoint.path] = model
            while len(self._loaded) > LOADED_MODELS:
                oldest = next(iter(self._loaded))
                if self._loaded[oldest] is self.current:
                    self._loaded.move_to_end(oldest)
                self._loaded.pop(next(iter(self._loaded)))
        return model
