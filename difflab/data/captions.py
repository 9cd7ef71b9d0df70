"""Captions for text conditioning, built from class names, synonyms and attributes read off each image.

A caption names the class by one of its synonyms and may mention the garment's shade (dark / light) and its
size within its class (small / large), e.g. "a photo of a large dark coat". Shade and size are measured on the
image, so every word of a caption is true of it. The captions form a finite set, so their text embeddings are
computed once per training run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from difflab.data.dataset import Dataset
from difflab.errors import DifflabError

# class name -> synonyms (a trailing "s" marks a plural noun, which takes "a pair of" or no article)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "T-shirt/top": ("t-shirt", "tee", "top", "tank top"),
    "Trouser": ("trousers", "pants", "slacks", "pair of trousers"),
    "Pullover": ("pullover", "sweater", "jumper", "knitted sweater"),
    "Dress": ("dress", "gown", "frock", "long dress"),
    "Coat": ("coat", "jacket", "overcoat", "parka"),
    "Sandal": ("sandal", "sandals", "open shoe", "flip-flop"),
    "Shirt": ("shirt", "button-up shirt", "blouse", "dress shirt"),
    "Sneaker": ("sneaker", "sneakers", "trainer", "running shoe"),
    "Bag": ("bag", "handbag", "purse", "tote bag"),
    "Ankle boot": ("ankle boot", "boot", "bootie", "short boot"),
}
PLURALS = {"trousers", "pants", "slacks", "sandals", "sneakers"}
SHADES = ("", "dark", "light")
SIZES = ("", "small", "large")
TEMPLATES = ("{np}", "a {np}", "a photo of a {np}", "a picture of a {np}")
GARMENT_LEVEL = 0.1  # a pixel above 10% of full intensity belongs to the garment


def _phrase(template: str, noun: str, size: str, shade: str) -> str:
    np_ = " ".join(w for w in (size, shade, noun) if w)
    text = template.format(np=np_)
    if noun in PLURALS:  # "a trousers" -> "trousers", "a photo of a trousers" -> "a photo of trousers"
        text = text.replace("a " + np_, np_)
    elif np_[0] in "aeiou":  # "a ankle boot" -> "an ankle boot"
        text = text.replace("a " + np_, "an " + np_)
    return text


def image_attributes(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shade and size index per image (0 = unremarkable, 1 = dark/small, 2 = light/large) by tertiles.

    Shade: mean intensity of the garment pixels, tertiles over the whole set. Size: the garment's share of the
    image, tertiles within the image's class (a large sandal is smaller than a small coat).
    """
    x = images.float().mean(1).flatten(1) / 255.0  # [N, H*W] in [0, 1]
    garment = x > GARMENT_LEVEL
    area = garment.float().mean(1)
    shade = (x * garment).sum(1) / garment.sum(1).clamp(min=1)
    lo, hi = torch.quantile(shade, torch.tensor([1 / 3, 2 / 3]))
    shade_idx = torch.where(shade < lo, 1, torch.where(shade > hi, 2, 0))
    size_idx = torch.zeros_like(shade_idx)
    for c in range(num_classes):
        members = labels == c
        if members.sum() >= 3:
            lo, hi = torch.quantile(area[members], torch.tensor([1 / 3, 2 / 3]))
            size_idx[members] = torch.where(area[members] < lo, 1, torch.where(area[members] > hi, 2, 0))
    return shade_idx, size_idx


@dataclass
class Captioner:
    """All captions of a labelled image set and a sampler of true captions for a batch of its images."""

    captions: list[str]
    table: torch.Tensor  # [classes, synonyms, templates, shades, sizes] -> caption index
    shade: torch.Tensor  # [N] attribute index per image
    size: torch.Tensor  # [N]

    @staticmethod
    def for_dataset(data: Dataset) -> Captioner:
        if data.labels is None or data.class_names is None or data.kind != "image":
            raise DifflabError(f"text conditioning builds captions from class names; data {data.name!r} has no "
                               f"labelled images")
        synonyms = [SYNONYMS.get(name, (name.lower(),)) for name in data.class_names]
        width = max(len(s) for s in synonyms)
        captions, index = [], {}
        table = torch.zeros(len(synonyms), width, len(TEMPLATES), len(SHADES), len(SIZES), dtype=torch.long)
        for c, words in enumerate(synonyms):
            for s, t, a, b in itertools.product(range(width), range(len(TEMPLATES)), range(len(SHADES)),
                                                range(len(SIZES))):
                text = _phrase(TEMPLATES[t], words[s % len(words)], SIZES[b], SHADES[a])
                table[c, s, t, a, b] = index.setdefault(text, len(index))
        captions = list(index)
        shade, size = image_attributes(data.data, data.labels, len(synonyms))
        return Captioner(captions, table, shade, size)

    def sample(self, index: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Caption indices [B] for the images at `index`: random synonym and template, each true attribute
        mentioned with probability 1/2."""
        n = len(index)
        synonym = torch.randint(0, self.table.shape[1], (n,), generator=generator)
        template = torch.randint(0, self.table.shape[2], (n,), generator=generator)
        mention = torch.rand(n, 2, generator=generator) < 0.5
        shade = self.shade[index] * mention[:, 0]
        size = self.size[index] * mention[:, 1]
        return self.table[labels, synonym, template, shade, size]
