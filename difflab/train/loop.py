"""The one training loop: any objective, AdamW with warm-up (and cosine decay) and clipping, EMA, step or
wall-clock budget, autocast and fp16 loss scaling, data parallelism, SIGTERM, and exact resume.

What a run trains, how a batch becomes a loss and what extra state it keeps belong to the objective
(difflab.train.objective); the loop owns the optimizer, the EMA, the RNG streams, the checkpoint and the log.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from difflab.data import Dataset
from difflab.distributed import init_shard, resolve_device
from difflab.errors import DifflabError
from difflab.precision import autocast, resolve_precision
from difflab.train.checkpoint import Checkpoint, load_scaler_state, optimizer_state, save_checkpoint
from difflab.train.ema import EMA, ema_decay
from difflab.train.log import append_log, plot_loss, truncate_log
from difflab.train.objective import Objective
from difflab.train.optim import learning_rate, set_learning_rate
from difflab.train.recipe import LoopConfig
from difflab.train.signals import interrupt_on_sigterm
from difflab.train.speed import CompiledNetwork, grad_scaler, memory_format


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


def scheduled_lr(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up, then constant or (cfg.lr_decay "cosine") cosine decay to 0 at cfg.steps."""
    lr = learning_rate(step, cfg.lr, cfg.warmup)
    if cfg.lr_decay == "cosine":
        lr *= 0.5 * (1 + math.cos(math.pi * step / cfg.steps))  # Loshchilov & Hutter 2017, Eq. 5 without restarts
    return lr


def slice_rows(draw: dict, part) -> dict:
    """Rows `part` of every per-row item of a draw (tensors, Conditions; None stays None)."""
    return {k: None if v is None else v[part] for k, v in draw.items()}


class TrainingLoop:
    """Trains objective.module on `data` with the recipe `cfg`, saving `kind` + `config` beside the weights."""

    def __init__(self, objective: Objective, data: Dataset, cfg: LoopConfig, out: Path, *, kind: str, config,
                 checkpoint_name: str, progress: bool = True):
        self.objective, self.data, self.cfg, self.out = objective, data, cfg, Path(out)
        self.kind, self.config, self.path = kind, config, self.out / checkpoint_name
        self.device = resolve_device(cfg.device)
        self.shard = init_shard(self.device)
        check_batch_split(cfg.batch, self.shard.world, cfg.accumulate)
        self.progress = progress and self.shard.is_main
        self.precision = resolve_precision(cfg.precision, self.device)
        self.layout = memory_format(self.device, self.precision)  # of conv weights and image batches
        # initialised on the CPU from the seed, so every device starts alike
        module = objective.module.to(self.device, memory_format=self.layout)
        self.ema = EMA(module) if cfg.ema_decay is not None else None
        self.optimizer = torch.optim.AdamW(objective.param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(cfg.seed)  # on the CPU whatever the device
        self.scaler = grad_scaler(self.device, self.precision)
        self.step = 0
        self.rng = self._rng_now()  # the RNG streams after the last completed step, which a checkpoint saves
        self.hooks: list[Callable[[int], None]] = []  # called with the step after each step, on the main process
        # the loss runs through the compiled network under --compile, and through DistributedDataParallel, which
        # averages gradients over ranks in backward; checkpoints save objective.module itself
        train_module = CompiledNetwork(module, warn=self.shard.is_main) if cfg.compile else module
        if self.shard.world > 1:
            train_module = torch.nn.parallel.DistributedDataParallel(
                train_module, device_ids=None if self.device.type == "cpu" else [self.device])
        self.train_module = train_module
        objective.bind(train_module)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue exactly from a checkpoint this loop wrote: weights, EMA, optimizer, RNG streams, loss scale and
        the objective's own state."""
        self.objective.module.load_state_dict(checkpoint.section("model"))
        if self.ema is not None:
            self.ema.model.load_state_dict(checkpoint.section("ema"))
        self.optimizer.load_state_dict(optimizer_state(checkpoint))
        self.generator.set_state(checkpoint.tensors["rng.noise"])
        torch.set_rng_state(checkpoint.tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in checkpoint.tensors:
            torch.cuda.set_rng_state(checkpoint.tensors["rng.cuda"], self.device)
        load_scaler_state(checkpoint, self.scaler)
        self.objective.load_state({name: checkpoint.section(name) for name in self.objective.state()})
        self.step = checkpoint.step
        self.rng = self._rng_now()
        if self.shard.is_main:
            truncate_log(self.out / "log.jsonl", self.step)

    def _rng_now(self) -> dict[str, torch.Tensor]:
        rng = {"noise": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)  # dropout on the GPU draws from it
        return rng

    def save(self) -> Path:
        """Write the checkpoint (on the main process only: every rank holds the same state). An interrupt inside a
        step saves the RNG streams as they were after the last completed one, so the resumed run redraws it."""
        if not self.shard.is_main:
            return self.path
        save_checkpoint(self.path, self.config, self.step, kind=self.kind, model=self.objective.module,
                        ema=None if self.ema is None else self.ema.model, optimizer=self.optimizer, rng=self.rng,
                        scaler=self.scaler, sections=self.objective.state(), refs=self.objective.frozen)
        return self.path

    def train_step(self) -> tuple[float, float]:
        cfg = self.cfg
        index = batch_indices(len(self.data), cfg.batch, self.step, cfg.seed)
        x0, labels = self.data.batch(index)
        if x0.ndim == 4:
            x0 = x0.contiguous(memory_format=self.layout)
        set_learning_rate(self.optimizer, scheduled_lr(self.step, cfg))
        draw = self.objective.draw(index, x0, labels, self.generator)  # the global batch's randomness
        take = self.shard.take  # this process's slice of the global batch and its randomness
        x0 = take(x0).to(self.device)
        local = {k: None if v is None else take(v).to(self.device) for k, v in draw.items()}
        self.optimizer.zero_grad(set_to_none=True)
        loss, records = 0.0, []
        micro = len(x0) // cfg.accumulate
        for k in range(cfg.accumulate):
            part = slice(k * micro, (k + 1) * micro)
            last = k == cfg.accumulate - 1
            sync = contextlib.nullcontext() if last or self.shard.world == 1 else self.train_module.no_sync()
            with sync, autocast(self.device, self.precision):
                per_sample, record = self.objective.loss(x0[part], slice_rows(local, part))
                micro_loss = per_sample.float().mean() / cfg.accumulate  # the mean over the batch, in parts
            if record is not None:
                records.append(record.detach())
            self.scaler.scale(micro_loss).backward()  # DDP averages the accumulated gradients on the last part
            loss += micro_loss.item()
        if records:  # every rank sees the whole global batch's records, in order
            self.objective.observe(draw, self.shard.gather(torch.cat(records), cfg.batch))
        self.scaler.unscale_(self.optimizer)  # fp16: clip the true gradients, not the loss-scaled ones
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)  # fp16: skipped when a gradient is inf/nan, and the scale halves
        self.scaler.update()
        if self.ema is not None and self.scaler.get_scale() >= scale:  # a skipped step makes no new iterate
            self.ema.update(self.objective.module, ema_decay(self.step, cfg.ema_decay))
        self.step += 1  # the step (data order, noise, lr) advances either way, so resume stays exact
        self.rng = self._rng_now()
        return self.shard.mean(loss), grad_norm.item()

    def run(self) -> Path:
        """Train until the step or time budget is spent and save; an interrupt (Ctrl-C, SIGTERM) saves first.

        Under torchrun only the main process writes files (checkpoint, log, plots)."""
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not self.progress, unit="step",
                   dynamic_ncols=True)
        with interrupt_on_sigterm():
            try:
                self._loop(bar)
            except KeyboardInterrupt:
                bar.close()
                self.save()
                self._plot()
                raise
        bar.close()
        path = self.save()
        self._plot()
        return path

    def _plot(self) -> None:
        if self.shard.is_main:
            plot_loss(self.out / "log.jsonl", self.out / "loss.png")

    def _out_of_time(self, deadline: float | None) -> bool:
        # every rank must stop at the same step, so the ranks agree on the clock
        return deadline is not None and self.shard.any(time.monotonic() >= deadline)

    def _loop(self, bar: tqdm) -> None:
        cfg = self.cfg
        deadline = None if cfg.minutes is None else time.monotonic() + 60 * cfg.minutes
        window_start, losses = time.monotonic(), []
        while (cfg.steps is None or self.step < cfg.steps) and not self._out_of_time(deadline):
            loss, grad_norm = self.train_step()
            losses.append(loss)
            bar.update(1)
            if self.step % cfg.log_every == 0:
                self._log(bar, losses, grad_norm, window_start)
                window_start, losses = time.monotonic(), []
            if self.step % cfg.checkpoint_every == 0:
                self.save()
            if self.shard.is_main:
                for hook in self.hooks:
                    hook(self.step)
        if losses:  # the last, partial window
            self._log(bar, losses, grad_norm, window_start)

    def _log(self, bar: tqdm, losses: list[float], grad_norm: float, window_start: float) -> None:
        if not self.shard.is_main:
            return
        elapsed = time.monotonic() - window_start
        row = {"step": self.step, "loss": sum(losses) / len(losses), "grad_norm": grad_norm,
               "lr": self.optimizer.param_groups[0]["lr"],
               "images_per_s": len(losses) * self.cfg.batch / max(elapsed, 1e-9)}
        append_log(self.out / "log.jsonl", row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
