"""Adapters and personalization: LoRA layers, textual-inversion embeddings, and their training (LoRA fine-tuning,
DreamBooth with prior preservation, textual inversion) on the one trainer."""

from difflab.adapters.embedding import EmbeddingConfig
from difflab.adapters.lora import LoraConfig

ADAPTER_CONFIGS = {"lora": LoraConfig, "embedding": EmbeddingConfig}  # component kind -> config class
