"""Training a diffusion model: its config filled in from the data, the network, the diffusion objective on the
one loop (difflab.train.loop), and sample grids along the way."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from difflab.data import Dataset, load_dataset
from difflab.distributed import resolve_device
from difflab.errors import DifflabError
from difflab.images import save_samples
from difflab.latent import training_latents
from difflab.nets import build_network
from difflab.nets.mlp import MLPConfig
from difflab.nets.unet import UNetConfig
from difflab.pipelines.generate import generate
from difflab.precision import resolve_precision
from difflab.text.encoder import TEXT_DIM
from difflab.train.checkpoint import build_denoiser, init_weights, load_checkpoint
from difflab.train.conditions import TrainingConditions
from difflab.train.config import ExperimentConfig
from difflab.train.loop import TrainingLoop
from difflab.train.low_res import LowResConditions, downsampled
from difflab.train.objective import DiffusionObjective

CHECKPOINT = "checkpoint.safetensors"


@dataclass(frozen=True)
class TrainResult:
    out: Path
    step: int
    checkpoint: Path
    samples: Path | None  # None on the non-main processes of a distributed run
    loss_plot: Path


def prepare_config(config: ExperimentConfig, data: Dataset) -> ExperimentConfig:
    """Fill in the data shape and, for conditioning, the class table, label embedding and text width."""
    network = config.network
    if isinstance(network, MLPConfig) != (data.kind == "points"):
        raise DifflabError(f"network.kind 'mlp' is for 2-D points, 'unet' and 'dit' for images; data {data.name!r} "
                           f"holds {data.kind}: use a matching --config")
    if isinstance(network, MLPConfig) and network.dim != data.shape[0]:
        network = replace(network, dim=data.shape[0])
    if not isinstance(network, MLPConfig) and network.in_channels != data.shape[0]:
        network = replace(network, in_channels=data.shape[0], out_channels=None)
    class_names = None
    cond = config.train.cond
    if cond != "none":
        if data.labels is None:
            raise DifflabError(f"--cond {cond} needs labels, and data {data.name!r} has none")
        class_names = data.class_names
    if "class" in cond:
        network = replace(network, num_classes=data.num_classes)
    if "text" in cond:
        if isinstance(network, MLPConfig):
            raise DifflabError(f"--cond {cond} needs a unet or dit network (cross-attention), not an mlp")
        network = replace(network, text_dim=TEXT_DIM)
    if config.train.low_res is not None:
        if not isinstance(network, UNetConfig):
            raise DifflabError("train.low_res (super-resolution) needs a unet network, which concatenates the image")
        network = replace(network, concat_conditions={"low_res": data.shape[0]}, noise_level_embedding=True)
    # "auto" precision becomes what this machine trains in, so the checkpoint says which it was
    device = resolve_device(config.train.device)
    train = replace(config.train, precision=resolve_precision(config.train.precision, device))
    return replace(config, network=network, data_shape=data.shape, class_names=class_names, train=train)


class Trainer:
    """`difflab train`: a fresh run, or (resume) the run saved in OUT continued exactly."""

    def __init__(self, config: ExperimentConfig, out: str | Path, resume: bool = False, progress: bool = True):
        self.out = Path(out)
        checkpoint = None
        if resume:
            path = self.out / CHECKPOINT
            if not path.is_file():
                raise DifflabError(f"--resume: no checkpoint at {path}")
            checkpoint = load_checkpoint(path)
            # the budget, the device and --compile come from this run, the rest of the recipe from the checkpoint
            per_run = {"steps": config.train.steps, "minutes": config.train.minutes, "device": config.train.device,
                       "compile": config.train.compile}
            config = replace(checkpoint.config, train=replace(checkpoint.config.train, **per_run))
        self.data = load_dataset(config.train.data, "train", config.train.data_root, seed=config.train.seed)
        if config.train.resolution is not None:
            self.data = downsampled(self.data, config.train.resolution)
        self.pixels, self.latent, latent_ref = self.data, None, None  # latent diffusion: the images, and their latents
        if config.train.autoencoder is not None:
            self.data, self.latent, latent_ref = training_latents(
                config.train.autoencoder, self.pixels, None if checkpoint is None else checkpoint.refs["autoencoder"])
        self.config = config if checkpoint else prepare_config(config, self.data)
        cfg = self.config.train
        torch.manual_seed(cfg.seed)
        net = build_network(self.config.network)
        new = init_weights(net, cfg.init_from) if checkpoint is None and cfg.init_from else None
        self.denoiser = build_denoiser(net, self.config)
        self.objective = DiffusionObjective(
            self.denoiser, cfg.loss, TrainingConditions(cfg.cond, cfg.p_uncond, self.pixels),
            label_lr_scale=cfg.label_lr_scale, min_snr_gamma=cfg.min_snr_gamma, vlb_weight=cfg.vlb_weight,
            decoder="discretized" if self.data.kind == "image" else "gaussian",
            low_res=None if cfg.low_res is None else LowResConditions(cfg.low_res, cfg.low_res_augmentation),
            max_timestep=cfg.max_timestep)
        if latent_ref is not None:  # frozen: referred to by path and sha256, never copied
            self.objective.frozen = {**self.objective.frozen, "autoencoder": latent_ref}
        self.loop = TrainingLoop(self.objective, self.data, cfg, self.out, kind="denoiser", config=self.config,
                                 checkpoint_name=CHECKPOINT, progress=progress)
        if checkpoint is not None:
            self.loop.restore(checkpoint)
        if new is not None and self.shard.is_main:
            print(f"initialised from {cfg.init_from}; {len(new)} new tensors keep their init")
        self.samples: Path | None = None
        self.loop.hooks.append(self._sample_on_schedule)

    @property
    def shard(self):
        return self.loop.shard

    @property
    def ema(self):
        return self.loop.ema

    @property
    def scaler(self):
        return self.loop.scaler

    @property
    def step(self) -> int:
        return self.loop.step

    def train_step(self) -> tuple[float, float]:
        return self.loop.train_step()

    def save(self) -> Path:
        return self.loop.save()

    def sample_grid(self) -> Path:
        """Samples from the EMA weights at a fixed seed, DDIM on its default grid (no effect on the training RNG
        streams)."""
        ema = build_denoiser(self.ema.model, self.config)
        n = 2000 if self.data.kind == "points" else 64
        x = generate(ema, self.config.data_shape, n, sampler="ddim", steps=self.config.train.sample_steps,
                     seed=1234, batch=n,
                     decode=None if self.latent is None else self.latent.decode)
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        save_samples(x, path, title=f"{self.data.name}, step {self.step}")
        return path

    def _sample_on_schedule(self, step: int) -> None:
        if step % self.config.train.sample_every == 0:
            self.samples = self.sample_grid()

    def run(self) -> TrainResult:
        """Train until the budget is spent; an interrupt (Ctrl-C, SIGTERM) saves a checkpoint first.

        Under torchrun only the main process writes files (checkpoint, log, plots, samples)."""
        checkpoint = self.loop.run()
        samples = self.samples
        if self.shard.is_main and (samples is None or samples.name != f"step_{self.step:07d}.png"):
            samples = self.sample_grid()
        return TrainResult(self.out, self.step, checkpoint, samples, self.out / "loss.png")
