"""What personalization optimises, as objectives of the one loop (difflab.train.loop).

- PersonalizationObjective: L_simple (or the base model's loss) on images captioned with one prompt, training the
  whole network (DreamBooth's fine-tuning) or only a LoRA; with class images, DreamBooth's prior preservation
  (Ruiz et al. 2023, Eq. 2): E ||x - x_hat(x_t, c)||^2 + lambda E ||x_pr - x_hat(x_pr,t', c_pr)||^2.
- TextualInversionObjective: the same loss, with only a token's input embedding trained (Gal et al. 2022, Eq. 2).
"""

from __future__ import annotations

import torch
from torch import nn

from difflab.adapters.embedding import TokenEmbedding, token_features
from difflab.conditioning import Condition, TextEmbedding
from difflab.denoiser import Denoiser
from difflab.objectives import LossKind
from difflab.text.encoder import TextEncoder
from difflab.train.checkpoint import ComponentRef
from difflab.train.objective import DiffusionObjective, Draw, Objective


class FixedText:
    """The condition of every training example: one prompt's text (a DiffusionObjective's `conditions`)."""

    def __init__(self, text: TextEmbedding):
        self.text = text

    def __call__(self, index: torch.Tensor, labels, generator: torch.Generator) -> Condition:
        return Condition(None, self.text.expand(len(index)))


class TemplateDraw:
    """Which prompt template each example uses, drawn from the training stream (a DiffusionObjective's
    `conditions`; the condition itself is encoded in the loss, where the embedding being trained enters)."""

    def __init__(self, count: int):
        self.count = count

    def __call__(self, index: torch.Tensor, labels, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(self.count, (len(index),), generator=generator)


class PersonalizationObjective(Objective):
    """Fine-tuning on images captioned `text`: of the whole network (`module` is the denoiser's net) or of a LoRA
    attached to it (`module` holds only the LoRA's parameters); with `class_images` and `class_text`, each
    example is paired with a class image drawn from the training stream, whose loss is weighted `prior_weight`."""

    def __init__(self, denoiser: Denoiser, module: nn.Module, loss: LossKind, text: TextEmbedding, *,
                 class_images: torch.Tensor | None = None, class_text: TextEmbedding | None = None,
                 prior_weight: float = 1.0, frozen: dict[str, ComponentRef] | None = None):
        self.denoiser, self.module = denoiser, module
        self.instance = DiffusionObjective(denoiser, loss, FixedText(text))
        self.prior = None if class_images is None else DiffusionObjective(denoiser, loss, FixedText(class_text))
        self.class_images, self.prior_weight = class_images, prior_weight
        self.frozen = frozen or {}

    def draw(self, index: torch.Tensor, x0: torch.Tensor, labels, generator: torch.Generator) -> Draw:
        draw = self.instance.draw(index, x0, labels, generator)
        if self.prior is not None:
            rows = torch.randint(len(self.class_images), (len(index),), generator=generator)
            prior_x0 = self.class_images[rows]
            draw.update({f"prior_{k}": v for k, v in self.prior.draw(rows, prior_x0, None, generator).items()})
            draw["prior_x0"] = prior_x0
        return draw

    def bind(self, module: nn.Module) -> None:
        trains_net = self.module is self.denoiser.net
        self.denoiser.to(next(module.parameters()).device)  # a LoRA's base moves with it
        net = module if trains_net else self.denoiser.net
        for objective in (self.instance, self.prior):
            if objective is not None:
                objective.bind(net)

    def loss(self, x0: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, None]:
        per_sample, _ = self.instance.loss(x0, draw)
        if self.prior is not None:
            prior = {k[len("prior_"):]: v for k, v in draw.items() if k.startswith("prior_")}
            prior_loss, _ = self.prior.loss(prior.pop("x0"), prior)
            per_sample = per_sample + self.prior_weight * prior_loss  # Ruiz et al. 2023, Eq. 2
        return per_sample, None


class TextualInversionObjective(Objective):
    """The denoiser's loss on the images captioned by `templates` (each with "{np}" where the token goes), where only
    the token's vectors (`module`, a TokenEmbedding) are trained."""

    def __init__(self, denoiser: Denoiser, module: TokenEmbedding, loss: LossKind, encoder: TextEncoder, token: str,
                 templates: tuple[str, ...], frozen: dict[str, ComponentRef] | None = None):
        self.denoiser, self.module, self.encoder, self.token = denoiser, module, encoder, token
        self.prompts = [t.format(np=token) for t in templates]
        self.diffusion = DiffusionObjective(denoiser, loss, TemplateDraw(len(self.prompts)))
        self.frozen = frozen or {}

    def draw(self, index: torch.Tensor, x0: torch.Tensor, labels, generator: torch.Generator) -> Draw:
        return self.diffusion.draw(index, x0, labels, generator)

    def bind(self, module: nn.Module) -> None:
        self.train_module = module
        self.denoiser.to(next(module.parameters()).device)
        self.diffusion.bind(self.denoiser.net)

    def loss(self, x0: torch.Tensor, draw: Draw) -> tuple[torch.Tensor, None]:
        vectors = self.train_module()
        text = token_features(self.encoder, self.prompts, {self.token: vectors.cpu()}).to(x0.device)
        per_sample, _ = self.diffusion.loss(x0, {**draw, "cond": Condition(None, text[draw["cond"]])})
        return per_sample, None
