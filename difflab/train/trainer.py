"""The training loop: AdamW with warm-up and clipping, EMA, step or wall-clock budget, exact resume."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from difflab.data import Dataset, load_dataset
from difflab.denoiser import Denoiser
from difflab.distributed import init_shard, resolve_device
from difflab.errors import DifflabError
from difflab.images import save_samples
from difflab.nets import build_network
from difflab.nets.mlp import MLPConfig
from difflab.objectives import draw_noise, training_loss
from difflab.pipelines.generate import generate
from difflab.schedules import DiscreteSchedule
from difflab.train.checkpoint import (init_weights, load_checkpoint, load_scaler_state, optimizer_state,
                                      save_checkpoint)
from difflab.text.encoder import TEXT_DIM
from difflab.train.conditions import TrainingConditions
from difflab.train.config import ExperimentConfig
from difflab.train.ema import EMA, ema_decay
from difflab.train.importance import LossHistorySampler
from difflab.train.log import append_log, plot_loss, truncate_log
from difflab.train.optim import build_optimizer, learning_rate, set_learning_rate
from difflab.train.speed import CompiledNetwork, autocast, grad_scaler

CHECKPOINT = "checkpoint.safetensors"


@dataclass(frozen=True)
class TrainResult:
    out: Path
    step: int
    checkpoint: Path
    samples: Path | None  # None on the non-main processes of a distributed run
    loss_plot: Path


def batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch at `step`: epoch e walks a permutation seeded by (seed, e), dropping the remainder."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise DifflabError(f"--batch {batch} is larger than the data set ({n} examples)")
    epoch, offset = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[offset * batch: (offset + 1) * batch]


def check_batch_split(batch: int, processes: int, accumulate: int) -> None:
    """Each process trains on batch / processes examples in `accumulate` equal micro-batches: no remainders."""
    if batch % processes:
        raise DifflabError(f"--batch {batch} must be divisible by the {processes} processes")
    if (batch // processes) % accumulate:
        raise DifflabError(f"--batch {batch} over {processes} process(es) leaves {batch // processes} examples each, "
                           f"which --accumulate {accumulate} cannot split evenly")


def prepare_config(config: ExperimentConfig, data: Dataset) -> ExperimentConfig:
    """Fill in the data shape and, for conditioning, the class table, label embedding and text width."""
    network = config.network
    if isinstance(network, MLPConfig) != (data.kind == "points"):
        raise DifflabError(f"network.kind 'mlp' is for 2-D points and 'unet' for images; data {data.name!r} "
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
            raise DifflabError(f"--cond {cond} needs a unet network (cross-attention), not an mlp")
        network = replace(network, text_dim=TEXT_DIM)
    return replace(config, network=network, data_shape=data.shape, class_names=class_names)


@contextlib.contextmanager
def interrupt_on_sigterm():
    """Turn SIGTERM into KeyboardInterrupt while training, so a stopped job saves its checkpoint first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Trainer:
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
        self.config = config if checkpoint else prepare_config(config, self.data)
        self.device = resolve_device(self.config.train.device)
        self.shard = init_shard(self.device)
        check_batch_split(self.config.train.batch, self.shard.world, self.config.train.accumulate)
        self.progress = progress and self.shard.is_main
        torch.manual_seed(self.config.train.seed)
        net = build_network(self.config.network)
        if checkpoint is None and self.config.train.init_from:
            new = init_weights(net, self.config.train.init_from)
            if self.shard.is_main:
                print(f"initialised from {self.config.train.init_from}; {len(new)} new tensors keep their init")
        if self.data.kind == "image":
            net = net.to(memory_format=torch.channels_last)  # about 10% faster convolutions on CPU
        net = net.to(self.device)  # initialised on the CPU from the seed, so every device starts alike
        self.denoiser = Denoiser(net, DiscreteSchedule(self.config.schedule), self.config.prediction)
        self.ema = EMA(net)
        self.optimizer = build_optimizer(net, self.config.train.lr, self.config.train.weight_decay,
                                         self.config.train.label_lr_scale)
        self.generator = torch.Generator().manual_seed(self.config.train.seed)  # on the CPU whatever the device
        self.scaler = grad_scaler(self.device, self.config.train.precision)
        self.conditions = TrainingConditions(self.config.train.cond, self.config.train.p_uncond, self.data)
        # L_vlb draws t by importance from the per-t loss history (Nichol & Dhariwal 2021, Sec. 3.3)
        self.t_sampler = LossHistorySampler(self.config.schedule.timesteps) if self.config.train.loss == "vlb" else None
        self.step = 0
        if checkpoint is not None:
            net.load_state_dict(checkpoint.section("model"))
            self.ema.model.load_state_dict(checkpoint.section("ema"))
            self.optimizer.load_state_dict(optimizer_state(checkpoint))
            self.generator.set_state(checkpoint.tensors["rng.noise"])
            torch.set_rng_state(checkpoint.tensors["rng.torch"])
            if self.device.type == "cuda" and "rng.cuda" in checkpoint.tensors:
                torch.cuda.set_rng_state(checkpoint.tensors["rng.cuda"], self.device)
            load_scaler_state(checkpoint, self.scaler)
            if self.t_sampler is not None:
                self.t_sampler.load_state_dict(checkpoint.section("importance"))
            self.step = checkpoint.step
            if self.shard.is_main:
                truncate_log(self.out / "log.jsonl", self.step)
        # the loss runs through the compiled network under --compile, and through DistributedDataParallel, which
        # averages gradients over ranks in backward; checkpoints save `net` itself
        train_net = CompiledNetwork(net, warn=self.shard.is_main) if self.config.train.compile else net
        if self.shard.world > 1:
            train_net = torch.nn.parallel.DistributedDataParallel(
                train_net, device_ids=None if self.device.type == "cpu" else [self.device])
        self.train_denoiser = Denoiser(train_net, self.denoiser.schedule, self.denoiser.prediction,
                                       self.denoiser.learned_variance)

    def save(self) -> Path:
        """Write the checkpoint (on the main process only: every rank holds the same state)."""
        path = self.out / CHECKPOINT
        if not self.shard.is_main:
            return path
        rng = {"noise": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)  # dropout on the GPU draws from it
        save_checkpoint(path, self.config, self.step, model=self.denoiser.net, ema=self.ema.model,
                        optimizer=self.optimizer, rng=rng, scaler=self.scaler,
                        sections=None if self.t_sampler is None else {"importance": self.t_sampler.state_dict()})
        return path

    def sample_grid(self) -> Path:
        """Samples from the EMA weights at a fixed seed (no effect on the training RNG streams)."""
        ema = Denoiser(self.ema.model, self.denoiser.schedule, self.denoiser.prediction)
        kind = self.data.kind
        n = 2000 if kind == "points" else 64
        x = generate(ema, self.config.data_shape, n, sampler="ddim", steps=self.config.train.sample_steps,
                     seed=1234, batch=n)
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        save_samples(x, path, title=f"{self.data.name}, step {self.step}")
        return path

    def train_step(self) -> tuple[float, float]:
        cfg = self.config.train
        index = batch_indices(len(self.data), cfg.batch, self.step, cfg.seed)
        x0, labels = self.data.batch(index)
        if x0.ndim == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        cond = self.conditions(index, labels, self.generator)
        set_learning_rate(self.optimizer, learning_rate(self.step, cfg.lr, cfg.warmup))
        timestep, eps = draw_noise(self.denoiser.schedule, tuple(x0.shape), self.generator, dtype=x0.dtype,
                                   t_sampler=self.t_sampler)
        # importance weights 1 / (T p_t) keep the L_vlb estimate unbiased (Nichol & Dhariwal 2021, Eq. 18)
        weights = None if self.t_sampler is None else self.t_sampler.weights(timestep).float()
        global_timestep = timestep
        take = self.shard.take  # this process's slice of the global batch and its noise
        x0, cond, timestep, eps, weights = take(x0), take(cond), take(timestep), take(eps), take(weights)
        x0, timestep, eps = x0.to(self.device), timestep.to(self.device), eps.to(self.device)
        cond = None if cond is None else cond.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss, per_sample = 0.0, []
        micro = len(x0) // cfg.accumulate
        for k in range(cfg.accumulate):
            part = slice(k * micro, (k + 1) * micro)
            last = k == cfg.accumulate - 1
            sync = contextlib.nullcontext() if last or self.shard.world == 1 else self.train_denoiser.net.no_sync()
            with sync, autocast(self.device, cfg.precision):
                micro_loss = training_loss(
                    cfg.loss, self.train_denoiser, x0[part], None if cond is None else cond[part],
                    noise=(timestep[part], eps[part]), min_snr_gamma=cfg.min_snr_gamma, vlb_weight=cfg.vlb_weight,
                    decoder="discretized" if self.data.kind == "image" else "gaussian").float()
                if weights is not None:
                    per_sample.append(micro_loss.detach())
                    micro_loss = micro_loss * weights[part].to(micro_loss.device)
                micro_loss = micro_loss.mean() / cfg.accumulate  # the mean over the batch, in parts
            self.scaler.scale(micro_loss).backward()  # DDP averages the accumulated gradients on the last part
            loss += micro_loss.item()
        if self.t_sampler is not None:  # every rank adds the whole global batch's losses, in order
            self.t_sampler.update(global_timestep, self.shard.gather(torch.cat(per_sample), cfg.batch))
        self.scaler.unscale_(self.optimizer)  # fp16: clip the true gradients, not the loss-scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(self.denoiser.net.parameters(), cfg.grad_clip)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)  # fp16: skipped when a gradient is inf/nan, and the scale halves
        self.scaler.update()
        if self.scaler.get_scale() >= scale:  # not skipped: a skipped step makes no new iterate to average in
            self.ema.update(self.denoiser.net, ema_decay(self.step, cfg.ema_decay))
        self.step += 1  # the step (data order, noise, lr) advances either way, so resume stays exact
        return self.shard.mean(loss), grad_norm.item()

    def run(self) -> TrainResult:
        """Train until the step or time budget is spent; an interrupt (Ctrl-C, SIGTERM) saves a checkpoint first.

        Under torchrun only the main process writes files (checkpoint, log, plots, samples).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        log_path = self.out / "log.jsonl"
        bar = tqdm(total=self.config.train.steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True)
        with interrupt_on_sigterm():
            try:
                samples = self._loop(log_path, bar)
            except KeyboardInterrupt:
                bar.close()
                self.save()
                self._plot(log_path)
                raise
        bar.close()
        checkpoint = self.save()
        self._plot(log_path)
        if self.shard.is_main and (samples is None or samples.name != f"step_{self.step:07d}.png"):
            samples = self.sample_grid()
        return TrainResult(self.out, self.step, checkpoint, samples, self.out / "loss.png")

    def _plot(self, log_path: Path) -> None:
        if self.shard.is_main:
            plot_loss(log_path, self.out / "loss.png")

    def _out_of_time(self, deadline: float | None) -> bool:
        # every rank must stop at the same step, so the ranks agree on the clock
        return deadline is not None and self.shard.any(time.monotonic() >= deadline)

    def _loop(self, log_path: Path, bar: tqdm) -> Path | None:
        cfg = self.config.train
        main = self.shard.is_main
        deadline = None if cfg.minutes is None else time.monotonic() + 60 * cfg.minutes
        samples = None
        window_start, losses = time.monotonic(), []
        while (cfg.steps is None or self.step < cfg.steps) and not self._out_of_time(deadline):
            loss, grad_norm = self.train_step()
            losses.append(loss)
            bar.update(1)
            if self.step % cfg.log_every == 0:
                self._log(log_path, bar, losses, grad_norm, window_start)
                window_start, losses = time.monotonic(), []
            if self.step % cfg.checkpoint_every == 0:
                self.save()
            if main and self.step % cfg.sample_every == 0:
                samples = self.sample_grid()
        if losses:  # the last, partial window
            self._log(log_path, bar, losses, grad_norm, window_start)
        return samples

    def _log(self, log_path: Path, bar: tqdm, losses: list[float], grad_norm: float, window_start: float) -> None:
        if not self.shard.is_main:
            return
        elapsed = time.monotonic() - window_start
        row = {"step": self.step, "loss": sum(losses) / len(losses), "grad_norm": grad_norm,
               "lr": self.optimizer.param_groups[0]["lr"],
               "images_per_s": len(losses) * self.config.train.batch / max(elapsed, 1e-9)}
        append_log(log_path, row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
