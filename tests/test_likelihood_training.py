"""Learned variance end to end: networks, Denoiser.with_variance, L_hybrid's stopped gradient, the DDPM sampler's
learned variance on a respaced grid, the config rules and `difflab nll`."""

import math

import pytest
import torch

from difflab.cli import main
from difflab.commands.train import training_config
from difflab.denoiser import Denoiser, VPPrecond
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.nets import build_network, network_config
from difflab.objectives import hybrid_loss, simple_loss, vlb_loss
from difflab.samplers.ancestral import sample_ddpm
from difflab.schedules import DiscreteSchedule
from difflab.train.checkpoint import save_checkpoint
from difflab.train.config import ExperimentConfig
from difflab.train.trainer import Trainer
from samplers_exact import GaussianDenoiser

S2 = 0.25


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_learned_variance_doubles_the_output_and_the_denoiser_splits_it(kind, tiny_unet_spec):
    spec = tiny_unet_spec if kind == "unet" else {"kind": "mlp", "dim": 3, "hidden": 16, "depth": 1}
    net = build_network(network_config({**spec, "learned_variance": True}))
    for p in net.parameters():  # the zero-initialised output layer would hide which half is which
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 8, 8) if kind == "unet" else torch.randn(2, 3)
    sigma = torch.tensor([0.5, 3.0])
    denoiser = Denoiser(net, VPPrecond(DiscreteSchedule(), "x0"))
    x0_hat, v = denoiser.with_variance(x, sigma)
    timestep = denoiser.schedule.timestep_from_sigma(sigma).float()
    output = net(x / torch.sqrt(1 + sigma**2).view(-1, *[1] * (x.ndim - 1)), timestep)
    assert output.shape[1] == 2 * x.shape[1]
    assert torch.allclose(x0_hat, output[:, : x.shape[1]], atol=1e-6) and torch.allclose(v, output[:, x.shape[1]:])
    assert torch.equal(denoiser(x, sigma), x0_hat)
    fixed = Denoiser(build_network(network_config(spec)), VPPrecond(DiscreteSchedule()))
    assert fixed.with_variance(x, sigma)[1] is None


def test_hybrid_loss_stops_the_mean_gradient_of_its_vlb_term():
    net = build_network(network_config({"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1, "learned_variance": True}))
    torch.nn.init.normal_(net.out.weight, std=0.1)
    denoiser = Denoiser(net, VPPrecond(DiscreteSchedule()))
    x0 = torch.rand(64, 2) * 2 - 1
    noise = (torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(0)), torch.randn(64, 2))
    simple, hybrid = simple_loss(denoiser, x0, noise=noise), hybrid_loss(denoiser, x0, noise=noise, decoder="gaussian")
    vlb = vlb_loss(denoiser, x0, noise=noise, decoder="gaussian")
    assert torch.allclose(hybrid, simple + 0.001 * vlb, rtol=1e-5)
    mean_rows, v_rows = slice(0, 2), slice(2, 4)  # the output layer's rows that make the prediction and v
    (grad,) = torch.autograd.grad((hybrid - simple).sum(), net.out.weight)
    assert float(grad[mean_rows].abs().max()) == 0.0 and float(grad[v_rows].abs().max()) > 0
    (grad,) = torch.autograd.grad(vlb.sum(), net.out.weight)
    assert float(grad[mean_rows].abs().max()) > 0  # L_vlb alone trains the mean too


class ExactStepVariance(GaussianDenoiser):
    """Data N(0, S2); v makes each step's variance the true reverse one, small + (1 - r)^2 Var[x0 | x] with
    r = sigma_next^2 / sigma^2, between the bounds small = sigma_next^2 (1 - r) and large = (sigma^2 - sigma_next^2)
    (1 + sigma_next^2) / (1 + sigma^2) of the step on this grid."""

    def __init__(self, sigmas):
        super().__init__(0.0, S2)
        self.sigmas = sigmas

    def with_variance(self, x, sigma):
        i = int(torch.argmin((self.sigmas - sigma[0]).abs()))
        s, s_next = self.sigmas[i], self.sigmas[i + 1]
        if s_next == 0:
            return self(x, sigma), torch.zeros_like(x)
        r = (s_next / s) ** 2
        small, large = s_next**2 * (1 - r), (s**2 - s_next**2) * (1 + s_next**2) / (1 + s**2)
        true = small + (1 - r) ** 2 * S2 * s**2 / (S2 + s**2)
        return self(x, sigma), torch.full_like(x, float((true.log() - small.log()) / (large.log() - small.log())))


def test_ddpm_with_the_learned_variance_is_exact_on_a_respaced_grid():
    """10 trailing steps: with the true reverse variance the samples have the variance of E[x0 | x(sigma_last)],
    S2^2 / (S2 + sigma_last^2); beta_tilde (0.109 measured) and beta (0.240) miss it."""
    sigmas = make_grid(DiscreteSchedule(), 10, "trailing")
    n = 20_000
    prior_std = math.sqrt(1 + sigmas[0] ** 2)
    x = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * prior_std
    target = S2**2 / (S2 + float(sigmas[-2]) ** 2)
    se = math.sqrt(2 / n) * target
    learned = sample_ddpm(ExactStepVariance(sigmas), x, sigmas, generator=torch.Generator().manual_seed(1))
    assert float(learned.var()) == pytest.approx(target, abs=4 * se)
    fixed = sample_ddpm(ExactStepVariance(sigmas), x, sigmas, generator=torch.Generator().manual_seed(1),
                        variance="beta_tilde")  # the override ignores v
    plain = sample_ddpm(GaussianDenoiser(0.0, S2), x, sigmas, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fixed, plain) and abs(float(fixed.var()) - target) > 20 * se
    with pytest.raises(DifflabError, match="learned variance"):
        sample_ddpm(GaussianDenoiser(0.0, S2), x[:4], sigmas, variance="learned")


@pytest.mark.parametrize("network,train,message", [
    ({}, {"loss": "hybrid"}, "set network.learned_variance"),
    ({"learned_variance": True}, {}, "needs train.loss 'hybrid' or 'vlb'"),
    ({}, {"loss": "kl"}, "--loss must be one of simple, hybrid, vlb"),
    ({"learned_variance": True}, {"loss": "hybrid", "vlb_weight": 0.0}, "vlb_weight must be > 0"),
])
def test_config_rules(network, train, message):
    with pytest.raises(DifflabError, match=message):
        ExperimentConfig.from_dict({"network": {"kind": "unet", **network}, "train": train})


def test_train_flag_loss_sets_the_learned_variance():
    from difflab.cli import build_parser

    config = training_config(build_parser().parse_args(["train", "--data", "toy:moons", "--loss", "hybrid"]))
    assert config.train.loss == "hybrid" and config.network.learned_variance


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    """A tiny hybrid-loss U-Net on 16 random 8-bit images, T = 20."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("nll")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    config = ExperimentConfig.from_dict({
        "network": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                    "attention_levels": [1], "head_dim": 8, "groups": 4, "learned_variance": True},
        "schedule": {"kind": "linear", "timesteps": 20, "beta_start": 0.001, "beta_end": 0.6},
        "train": {"data": str(root / "images"), "batch": 8, "steps": 2, "loss": "hybrid", "sample_every": 10_000,
                  "checkpoint_every": 10_000, "sample_steps": 2},
    })
    (root / "run").mkdir()
    trainer = Trainer(config, root / "run", progress=False)
    trainer.train_step()  # the discretized decoder's L_0 in the loss
    return trainer.save()


@pytest.mark.parametrize("method,extra", [("vlb", []), ("ode", ["--rtol", "1e-3", "--atol", "1e-3"])])
def test_nll_command_prints_bits_per_dim(capsys, image_checkpoint, method, extra):
    assert main(["nll", str(image_checkpoint), "--method", method, "--n", "3", "--batch", "2", *extra]) == 0
    out = capsys.readouterr().out
    value, _, error = out.split()[:3]
    assert "bits/dim" in out and 0 < float(value) < 30 and float(error) >= 0


def test_nll_command_rejects_bad_input(capsys, image_checkpoint, tmp_path):
    assert main(["nll", str(image_checkpoint), "--method", "ode", "--rtol", "2"]) == 2
    assert "--rtol must lie in (0, 1)" in capsys.readouterr().err
    toy = ExperimentConfig.from_dict({"network": {"kind": "mlp"}, "train": {"data": "toy:moons"}, "data_shape": [2]})
    save_checkpoint(tmp_path / "toy.safetensors", toy, 0, model=build_network(toy.network))
    assert main(["nll", str(tmp_path / "toy.safetensors")]) == 2
    assert "needs a model of 8-bit images" in capsys.readouterr().err
