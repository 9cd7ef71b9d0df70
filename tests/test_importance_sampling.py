"""Importance sampling of t for L_vlb (Nichol & Dhariwal 2021, Sec. 3.3): warm-up, p_t, unbiasedness, exact resume."""

import math

import pytest
import torch

from difflab.train.checkpoint import load_checkpoint
from difflab.train.config import ExperimentConfig
from difflab.train.importance import HISTORY, UNIFORM_SHARE, LossHistorySampler
from difflab.train.trainer import Trainer


def filled(losses_per_t: list[float]) -> LossHistorySampler:
    """A sampler whose history holds HISTORY copies of each t's loss."""
    sampler = LossHistorySampler(len(losses_per_t))
    for _ in range(HISTORY):
        sampler.update(torch.arange(len(losses_per_t)), torch.tensor(losses_per_t))
    return sampler


def test_uniform_until_every_timestep_has_ten_losses():
    sampler = LossHistorySampler(3)
    for _ in range(HISTORY):
        sampler.update(torch.tensor([0, 1]), torch.tensor([5.0, 1.0]))
    sampler.update(torch.tensor([2] * (HISTORY - 1)), torch.full((HISTORY - 1,), 0.1))
    assert not sampler.warm and torch.equal(sampler.probabilities(), torch.full((3,), 1 / 3, dtype=torch.float64))
    sampler.update(torch.tensor([2]), torch.tensor([0.1]))
    assert sampler.warm and float(sampler.probabilities()[0]) > 0.5


def test_probabilities_follow_the_root_mean_square_of_the_last_ten_losses():
    sampler = LossHistorySampler(2)
    for loss in [100.0] * 5 + [3.0, 4.0] * 5:  # the five oldest (100) are pushed out of t = 0's history
        sampler.update(torch.tensor([0]), torch.tensor([loss]))
    for _ in range(HISTORY):
        sampler.update(torch.tensor([1]), torch.tensor([1.0]))
    rms = torch.tensor([math.sqrt(12.5), 1.0], dtype=torch.float64)  # sqrt(mean(3^2, 4^2)), sqrt(mean(1^2))
    expected = rms / rms.sum() * (1 - UNIFORM_SHARE) + UNIFORM_SHARE / 2
    assert torch.allclose(sampler.probabilities(), expected, rtol=1e-12)


def test_weighted_estimate_is_unbiased():
    """E_{t~p}[L_t / (T p_t)] = (1/T) sum_t L_t: exactly over p, and for the mean of 200k draws within error bars."""
    losses = torch.tensor([8.0, 0.5, 0.1, 0.05, 2.0, 0.01], dtype=torch.float64)
    sampler = filled(losses.tolist())
    p = sampler.probabilities()
    assert float((p - 1 / 6).abs().max()) > 0.1  # far from uniform
    t = torch.arange(6)
    assert float((p * sampler.weights(t) * losses).sum()) == pytest.approx(float(losses.mean()), rel=1e-12)
    draws = sampler.sample(200_000, torch.Generator().manual_seed(0))
    estimate = sampler.weights(draws) * losses[draws]
    uniform = losses[torch.randint(0, 6, (200_000,), generator=torch.Generator().manual_seed(1))]
    assert float(estimate.mean()) == pytest.approx(float(losses.mean()), abs=4 * float(estimate.std()) / math.sqrt(2e5))
    assert float(estimate.std()) < 0.5 * float(uniform.std())  # the point of it: less variance than uniform t


def test_state_round_trip_draws_the_same_timesteps():
    sampler = filled([1.0, 2.0, 3.0, 4.0])
    restored = LossHistorySampler(4)
    restored.load_state_dict(sampler.state_dict())
    a = sampler.sample(50, torch.Generator().manual_seed(7))
    b = restored.sample(50, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def vlb_config(**train) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "network": {"kind": "mlp", "hidden": 32, "depth": 1, "learned_variance": True},
        "schedule": {"kind": "linear", "timesteps": 4, "beta_start": 0.01, "beta_end": 0.5},
        "train": {"data": "toy:moons", "batch": 16, "lr": 1e-3, "warmup": 2, "loss": "vlb", "log_every": 2,
                  "sample_every": 10_000, "checkpoint_every": 10_000, "sample_steps": 2, **train},
    })


def train(config: ExperimentConfig, out, steps: int, resume: bool = False) -> None:
    """`steps` optimizer steps and a checkpoint, without the end-of-run plots and samples."""
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, out, resume=resume, progress=False)
    for _ in range(steps):
        trainer.train_step()
    trainer.save()


def test_vlb_training_resumes_exactly_with_the_loss_history(tmp_path):
    """T = 4 and 16 samples a step: the history fills within the first steps, so later steps draw t by importance."""
    train(vlb_config(steps=8), tmp_path / "straight", 8)
    train(vlb_config(steps=4), tmp_path / "resumed", 4)
    train(vlb_config(steps=8), tmp_path / "resumed", 4, resume=True)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors").tensors
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint.safetensors").tensors
    assert bool((straight["importance.counts"] == HISTORY).all())
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
