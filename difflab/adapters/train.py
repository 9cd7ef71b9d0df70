"""Personalization runs on the one loop: LoRA fine-tuning on captioned images, DreamBooth (whole network or LoRA)
with class images the base model drew for prior preservation, and textual inversion. The base is loaded frozen and
referred to by path and sha256 in what is written, never copied (except by a whole-network DreamBooth, whose result
is a new denoiser)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from difflab.adapters.embedding import EmbeddingConfig, TokenEmbedding, save_embedding, word_vectors
from difflab.adapters.files import save_adapter
from difflab.adapters.lora import Lora, LoraConfig, attach
from difflab.adapters.objectives import PersonalizationObjective, TextualInversionObjective
from difflab.data import FASHION_MNIST_CLASSES, Dataset, load_dataset
from difflab.data.captions import TEMPLATES
from difflab.data.folder import load_image_folder
from difflab.errors import DifflabError
from difflab.images import to_uint8
from difflab.model import Model, load_model
from difflab.pipelines.guidance import GuidanceRequest
from difflab.pipelines.request import Request, plan_request
from difflab.text.encoder import text_encoder
from difflab.train.checkpoint import ComponentRef, save_checkpoint
from difflab.train.loop import TrainingLoop
from difflab.train.objective import Objective
from difflab.train.recipe import LoopConfig

TRAINING_STATE = "training.safetensors"  # the loop's checkpoint (weights being trained, optimizer, RNG streams)
LORA_FILE, MODEL_FILE, EMBEDDING_FILE = "lora.safetensors", "model.safetensors", "embedding.safetensors"
DEFAULT_LORA = LoraConfig()


@dataclass(frozen=True)
class Recipe:
    """The loop settings of a personalization run (no EMA: short runs on a few images keep their last weights)."""

    steps: int | None = 400
    minutes: float | None = None
    batch: int = 8
    lr: float = 1e-3
    warmup: int = 20
    seed: int = 0
    device: str = "auto"

    def loop(self, data: str) -> LoopConfig:
        return LoopConfig(data=data, steps=self.steps, minutes=self.minutes, batch=self.batch, lr=self.lr,
                          warmup=self.warmup, seed=self.seed, ema_decay=None, log_every=10, checkpoint_every=100,
                          device=self.device)


@dataclass(frozen=True)
class Result:
    path: Path  # the adapter (or model) file written
    step: int
    seconds: float
    trainable: int  # parameters trained
    total: int  # parameters of the base network


def subject_data(spec: str, root: str | None = None) -> Dataset:
    """A folder of images, or `fashion-mnist:FILTER` (FILTER: class names or indices, comma-separated, e.g. Bag)."""
    if spec.startswith("fashion-mnist:"):
        wanted = [w.strip() for w in spec.split(":", 1)[1].split(",") if w.strip()]
        names = [n.lower() for n in FASHION_MNIST_CLASSES]
        classes = []
        for word in wanted:
            if word.isdigit() and int(word) < len(names):
                classes.append(int(word))
            elif word.lower() in names:
                classes.append(names.index(word.lower()))
            else:
                raise DifflabError(f"--data {spec}: {word!r} is not a Fashion-MNIST class (0..9 or one of "
                                   f"{', '.join(FASHION_MNIST_CLASSES)})")
        data = load_dataset("fashion-mnist", "train", root)
        keep = torch.isin(data.labels, torch.tensor(classes))
        return replace(data, data=data.data[keep], labels=data.labels[keep])
    if not Path(spec).is_dir():
        raise DifflabError(f"--data/--instance/--images: {spec!r} is neither a folder of images nor "
                           f"fashion-mnist:CLASS")
    return load_image_folder(spec)


def repeated(data: Dataset, batch: int) -> Dataset:
    """The examples repeated until there are at least `batch` of them (DreamBooth trains on 3-5 images)."""
    times = -(-batch // len(data))
    labels = None if data.labels is None else data.labels.repeat(times)
    return replace(data, data=data.data.repeat(times, 1, 1, 1), labels=labels)


def base_model(path: str | Path, data: Dataset) -> tuple[Model, ComponentRef]:
    """The frozen base (a text-conditional pixel model) and its ref; the data must have the model's shape."""
    model = load_model(path)
    config = model.checkpoint.config
    if "text" not in config.network.accepts:
        raise DifflabError(f"--base {path}: personalization needs a text-conditional model (prompts), and this one "
                           f"takes {', '.join(sorted(config.network.accepts)) or 'no conditions'}")
    if "autoencoder" in model.checkpoint.refs:
        raise DifflabError(f"--base {path}: a latent model; personalization trains pixel models only for now")
    if tuple(data.shape) != tuple(config.data_shape):
        raise DifflabError(f"the images are {tuple(data.shape)}, and the base model makes {tuple(config.data_shape)}")
    model.denoiser.net.requires_grad_(False).train()
    return model, ComponentRef.to("denoiser", model.files["denoiser"])


def class_images(model: Model, prompt: str, n: int, folder: Path, *, cfg: float = 1.0, steps: int = 20,
                 seed: int = 0, progress: bool = True) -> torch.Tensor:
    """n images of `prompt` drawn by the base model, cached as PNGs in `folder` (only the missing ones are drawn;
    image i uses seed + i), as floats in [-1, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob("*.png"))
    if len(have) < n:
        request = Request(prompt=prompt, guidance=GuidanceRequest(cfg=cfg), sampler="ddim", steps=steps,
                          n=n - len(have), seed=seed + len(have), batch=64)
        plan = plan_request(request, model.denoiser, model.checkpoint.config)
        if progress:
            print(f"drawing {n - len(have)} class images of {prompt!r} into {folder}", flush=True)
        for i, image in enumerate(to_uint8(plan.sample(progress=progress)), start=len(have)):
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(folder / f"{i:05d}.png")
    data = load_image_folder(folder)
    return data.data[:n].float() / 127.5 - 1.0


def class_folder(out: Path, base: ComponentRef, prompt: str) -> Path:
    """Where the class images of a base and prompt are cached: one folder per pair."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-") or "empty"
    return out / "class_images" / f"{base.sha256[:10]}-{slug}"


def count(params) -> int:
    return sum(p.numel() for p in params)


def run_loop(objective: Objective, data: Dataset, recipe: Recipe, out: Path, kind: str, config,
             progress: bool) -> tuple[TrainingLoop, float]:
    loop = TrainingLoop(objective, data, recipe.loop(data.name), out, kind=kind, config=config,
                        checkpoint_name=TRAINING_STATE, progress=progress)
    start = time.perf_counter()
    loop.run()
    return loop, time.perf_counter() - start


def train_personalized(base_path: str | Path, data: Dataset, prompt: str, out: str | Path, *,
                       lora: LoraConfig | None = DEFAULT_LORA, recipe: Recipe = Recipe(),
                       class_prompt: str | None = None, num_class_images: int = 0, prior_weight: float = 1.0,
                       class_dir: str | Path | None = None, progress: bool = True) -> Result:
    """Fine-tune on `data` captioned `prompt`: a LoRA (`lora`) or, with lora None, the whole network. With a
    `class_prompt` and num_class_images > 0, DreamBooth's prior preservation on the base model's class images."""
    out = Path(out)
    model, base = base_model(base_path, repeated(data, recipe.batch))
    encoder = text_encoder()
    prior = {}
    if class_prompt is not None and num_class_images > 0:
        folder = Path(class_dir) if class_dir else class_folder(out, base, class_prompt)
        images = class_images(model, class_prompt, num_class_images, folder, seed=recipe.seed, progress=progress)
        prior = {"class_images": images, "class_text": encoder.encode([class_prompt]), "prior_weight": prior_weight}
    net = model.denoiser.net
    total = count(net.parameters())
    config = model.checkpoint.config
    if lora is None:
        net.requires_grad_(True)
        module, kind, run_config = net, "denoiser", config
    else:
        torch.manual_seed(recipe.seed)  # the A matrices' initialisation
        module, kind, run_config = Lora(net, lora), "lora", lora
        attach(net, module, "training")
    objective = PersonalizationObjective(model.denoiser, module, config.train.loss, encoder.encode([prompt]),
                                         frozen={} if lora is None else {"base": base}, **prior)
    loop, seconds = run_loop(objective, repeated(data, recipe.batch), recipe, out, kind, run_config, progress)
    trainable = count(p for p in module.parameters() if p.requires_grad)
    metadata = {"prompt": prompt, **({"class_prompt": class_prompt} if prior else {})}
    if lora is None:  # a new denoiser: the fine-tuned weights with the base's config
        path = out / MODEL_FILE
        save_checkpoint(path, config, loop.step, model=net.cpu(), extra_metadata=metadata)
    else:
        path = save_adapter(out / LORA_FILE, "lora", lora, module.adapter_tensors(), base, loop.step, metadata)
    return Result(path, loop.step, seconds, trainable, total)


def train_embedding(base_path: str | Path, data: Dataset, token: str, init_word: str, out: str | Path, *,
                    num_vectors: int = 1, templates: tuple[str, ...] = TEMPLATES, recipe: Recipe = Recipe(),
                    progress: bool = True) -> Result:
    """Textual inversion: learn `token`'s vectors (starting from `init_word`'s) on `data` with the base frozen."""
    out = Path(out)
    config = EmbeddingConfig(token, init_word, num_vectors)
    model, base = base_model(base_path, repeated(data, recipe.batch))
    encoder = text_encoder()
    module = TokenEmbedding(word_vectors(encoder, init_word, num_vectors))
    objective = TextualInversionObjective(model.denoiser, module, model.checkpoint.config.train.loss, encoder, token,
                                          templates, frozen={"base": base})
    loop, seconds = run_loop(objective, repeated(data, recipe.batch), recipe, out, "embedding", config, progress)
    path = save_embedding(out / EMBEDDING_FILE, config, module.vectors, base, loop.step)
    return Result(path, loop.step, seconds, module.vectors.numel(), count(model.denoiser.net.parameters()))


def describe(result: Result) -> str:
    share = 100 * result.trainable / result.total
    return (f"trained {result.trainable:,} parameters ({share:.2f}% of the base network's {result.total:,}) for "
            f"{result.step} steps in {result.seconds / 60:.1f} min; wrote {result.path} "
            f"({result.path.stat().st_size / 1024:.1f} kB)")
