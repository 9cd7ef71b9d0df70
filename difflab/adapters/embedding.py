"""Textual inversion (Gal et al. 2022): a new token whose input-embedding vectors are learnt, with the text encoder and
the denoiser frozen. Where the token appears in a prompt its k vectors take the place of word-piece embeddings at the
frozen MiniLM's input (v* = argmin_v E ||eps - eps_theta(x_t, t, c_theta(y; v))||^2, Gal et al. 2022, Eq. 2).

A prompt is split at the tokens it uses; its text parts are tokenized as usual and the tokens become their vectors,
so a prompt without any loaded token is encoded exactly as before.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from difflab.adapters.files import config_fields, load_adapter, save_adapter
from difflab.conditioning import TextEmbedding
from difflab.errors import DifflabError
from difflab.text.encoder import ENCODER_NAME, TEXT_DIM, TextEncoder, sentence_embedding
from difflab.train.checkpoint import Checkpoint, ComponentRef

KIND = "embedding"
VECTORS = "vectors"  # the one tensor of an embedding file, [k, TEXT_DIM]


@dataclass(frozen=True)
class EmbeddingConfig:
    token: str  # as written in prompts, e.g. "<my-shoe>"
    init_word: str = ""  # the word its vectors started from
    num_vectors: int = 1
    encoder: str = ENCODER_NAME  # the text encoder whose input embeddings they live among

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() for c in self.token):
            raise DifflabError(f"--token must be one word without spaces, e.g. '<my-shoe>', got {self.token!r}")
        if self.num_vectors <= 0:
            raise DifflabError(f"--num-vectors must be > 0, got {self.num_vectors}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> EmbeddingConfig:
        return cls(**config_fields(cls, spec, "embedding"))


class TokenEmbedding(nn.Module):
    """The trainable vectors of one token, [k, D]; calling it returns them (so DDP sees them used)."""

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.vectors = nn.Parameter(vectors.detach().clone().float())

    def forward(self) -> torch.Tensor:
        return self.vectors


def word_vectors(encoder: TextEncoder, word: str, num_vectors: int) -> torch.Tensor:
    """[k, D] start for a token: the mean input embedding of `word`'s word pieces, repeated k times."""
    ids = encoder.tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DifflabError(f"--init-word {word!r} has no word pieces in the encoder's vocabulary")
    table = encoder.model.get_input_embeddings().weight
    return table[ids].detach().float().mean(0).repeat(num_vectors, 1)


def split_prompt(prompt: str, tokens: list[str]) -> list[str]:
    """The prompt cut at the tokens (kept as parts of their own): "a <s> bag" -> ["a ", "<s>", " bag"]."""
    if not tokens:
        return [prompt]
    pattern = "(" + "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + ")"
    return [part for part in re.split(pattern, prompt) if part]


def token_features(encoder: TextEncoder, prompts: list[str], embeddings: dict[str, torch.Tensor]
                   ) -> TextEmbedding:
    """The encoder's output for non-empty prompts whose loaded tokens enter as their vectors; differentiable in
    the vectors (the encoder itself stays frozen)."""
    tokenizer, table = encoder.tokenizer, encoder.model.get_input_embeddings()
    names = list(embeddings)
    all_vectors = torch.cat([embeddings[t].to(table.weight.dtype) for t in names]) if names else None
    first = dict(zip(names, torch.tensor([0] + [len(embeddings[t]) for t in names]).cumsum(0).tolist()))
    rows = []  # per prompt: word-piece ids (int) or ("slot", index into all_vectors)
    for prompt in prompts:
        items: list[int | tuple[str, int]] = []
        for part in split_prompt(prompt, names):
            if part in embeddings:
                items += [("slot", first[part] + j) for j in range(len(embeddings[part]))]
            else:
                items += tokenizer(part, add_special_tokens=False)["input_ids"]
        rows.append([tokenizer.cls_token_id, *items[: encoder.max_tokens - 2], tokenizer.sep_token_id])
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    slots = torch.full((len(rows), length), -1, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        mask[i, : len(row)] = True
        for j, item in enumerate(row):
            if isinstance(item, tuple):
                slots[i, j] = item[1]
            else:
                ids[i, j] = item
    inputs = table(ids)
    if all_vectors is not None:
        inputs = torch.where((slots >= 0)[..., None], all_vectors[slots.clamp(min=0)], inputs)
    tokens = encoder.model(inputs_embeds=inputs, attention_mask=mask.long(),
                           token_type_ids=torch.zeros_like(ids)).last_hidden_state.float()
    return TextEmbedding(tokens * mask[..., None], mask, sentence_embedding(tokens, mask))


def vectors_digest(vectors: torch.Tensor) -> str:
    return hashlib.sha256(vectors.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def use_embedding(encoder: TextEncoder, token: str, vectors: torch.Tensor) -> None:
    """Prompts given to `encoder` that contain `token` use these vectors from now on (cached under their digest)."""
    if vectors.ndim != 2 or vectors.shape[1] != TEXT_DIM:
        raise DifflabError(f"embedding {token!r}: vectors must be [k, {TEXT_DIM}], got {tuple(vectors.shape)}")
    with encoder.lock:
        encoder.embeddings[token] = (vectors.detach().float().cpu().clone(), vectors_digest(vectors))


def forget_embedding(encoder: TextEncoder, token: str) -> None:
    with encoder.lock:
        encoder.embeddings.pop(token, None)


def save_embedding(path: str | Path, config: EmbeddingConfig, vectors: torch.Tensor, base: ComponentRef,
                   step: int) -> Path:
    return save_adapter(path, KIND, config, {VECTORS: vectors}, base, step)


@dataclass(frozen=True)
class LoadedEmbedding:
    config: EmbeddingConfig
    vectors: torch.Tensor  # [k, D]
    checkpoint: Checkpoint

    @property
    def token(self) -> str:
        return self.config.token


def load_embedding(path: str | Path) -> LoadedEmbedding:
    """An embedding file; one made for another text encoder is refused in one line."""
    checkpoint = load_adapter(path, KIND)
    config: EmbeddingConfig = checkpoint.config
    if config.encoder != ENCODER_NAME:
        raise DifflabError(f"embedding {Path(path).name} is for text encoder {config.encoder}, not {ENCODER_NAME}")
    vectors = checkpoint.tensors.get(VECTORS)
    if set(checkpoint.tensors) != {VECTORS} or vectors.ndim != 2 or vectors.shape[1] != TEXT_DIM:
        raise DifflabError(f"embedding {path} must hold one tensor {VECTORS!r} of shape [k, {TEXT_DIM}]")
    return LoadedEmbedding(config, vectors.float(), checkpoint)


@torch.no_grad()
def embedded_features(encoder: TextEncoder, prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """What TextEncoder caches for prompts that use its loaded embeddings: prompt -> (tokens [L, D], pooled [D])."""
    text = token_features(encoder, prompts, {t: v for t, (v, _) in encoder.embeddings.items()})
    return {p: (t[m].clone(), pooled.clone()) for p, t, m, pooled in zip(prompts, text.tokens, text.mask, text.pooled)}
