"""EDM preconditioning and loss (Karras et al. 2022): exact on Gaussian data, and it trains."""

import json

import numpy as np
import pytest
import torch

from difflab.data import load_dataset
from difflab.denoiser import Denoiser, EDMConfig, EDMPrecond
from difflab.errors import DifflabError
from difflab.eval.toy_metrics import sliced_wasserstein
from difflab.objectives import edm_loss
from difflab.pipelines.generate import generate
from difflab.schedules import append_dims
from difflab.train.checkpoint import load_denoiser
from difflab.train.config import ExperimentConfig
from difflab.train.trainer import Trainer

from samplers_exact import GaussianDenoiser

MU, S = 0.3, 0.5  # data x0 ~ N(MU, S^2) per coordinate


class ExactF(torch.nn.Module):
    """The F that makes c_skip x + c_out F the exact denoiser of N(MU, S^2): it reads x and sigma back from
    (c_in x, c_noise) the way EDMPrecond makes them, so any slip in the scalings shows."""

    def __init__(self, precond: EDMPrecond):
        super().__init__()
        self.precond, self.p = precond, torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # runs in float64
        self.exact = GaussianDenoiser(MU, S**2)

    def forward(self, x_in, c_noise, cond=None):
        sigma = torch.exp(4 * c_noise.double())  # c_noise = ln(sigma) / 4
        c_skip, c_out, c_in = (append_dims(c, x_in.ndim) for c in self.precond.scalings(sigma))
        x = x_in.double() / c_in
        return ((self.exact(x, sigma) - c_skip * x) / c_out).to(x_in.dtype)


def test_edm_scalings_are_table_1():
    precond = EDMPrecond(EDMConfig(sigma_data=0.5))
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in = precond.scalings(sigma)
    assert torch.allclose(c_skip, 0.25 / (sigma**2 + 0.25))
    assert torch.allclose(c_out, sigma * 0.5 / (sigma**2 + 0.25).sqrt())
    assert torch.allclose(c_in, 1 / (sigma**2 + 0.25).sqrt())
    assert torch.allclose(c_out**2 * (sigma**2 + 0.25) / (0.25 * sigma**2), torch.ones(3, dtype=torch.float64))
    x0_hat = precond.x0(torch.ones(3, 1, dtype=torch.float64), sigma, torch.zeros(3, 1, dtype=torch.float64))
    assert torch.allclose(x0_hat[:, 0], c_skip)  # D(x, sigma) = c_skip x where F = 0


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0, 60.0])
def test_edm_preconditioning_reproduces_the_exact_gaussian_denoiser(sigma):
    precond = EDMPrecond(EDMConfig(sigma_data=S))
    denoiser = Denoiser(ExactF(precond), precond)
    g = torch.Generator().manual_seed(0)
    x = MU + torch.randn(256, 4, generator=g, dtype=torch.float64) * (S**2 + sigma**2) ** 0.5
    levels = torch.full((256,), sigma, dtype=torch.float64)
    assert torch.allclose(denoiser(x, levels), GaussianDenoiser(MU, S**2)(x, levels), rtol=1e-10, atol=1e-10)


def test_edm_loss_of_the_exact_denoiser_is_one_when_sigma_data_is_the_data_std():
    # lambda(sigma) E||D* - x0||^2 = (1 / c_out^2) * S^2 sigma^2 / (S^2 + sigma^2) = 1 at every sigma when S = sigma_data
    precond = EDMPrecond(EDMConfig(sigma_data=S))
    denoiser = Denoiser(ExactF(precond), precond)
    x0 = MU + S * torch.randn(20_000, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = edm_loss(denoiser, x0, generator=torch.Generator().manual_seed(2))
    assert loss.shape == (20_000,) and float(loss.mean()) == pytest.approx(1.0, abs=0.02)


def edm_toy_config(**train) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "network": {"kind": "mlp", "hidden": 64, "depth": 2},
        "precond": {"kind": "edm", "sigma_data": 0.5},
        "train": {"data": "toy:8gaussians", "loss": "edm", "batch": 256, "lr": 2e-3, "warmup": 50, "ema_decay": 0.99,
                  "log_every": 10, "sample_every": 10_000, "checkpoint_every": 10_000, **train},
    })


def test_edm_objective_trains_on_toy_data(tmp_path):
    result = Trainer(edm_toy_config(steps=800), tmp_path, progress=False).run()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert np.mean([r["loss"] for r in log[-10:]]) < 0.7 * np.mean([r["loss"] for r in log[:3]])
    denoiser, checkpoint = load_denoiser(result.checkpoint)
    assert denoiser.precond.kind == "edm" and checkpoint.config.precond == EDMConfig(sigma_data=0.5)
    samples = generate(denoiser, checkpoint.config.data_shape, 1500, sampler="heun", steps=18, grid="karras",
                       batch=1500)
    data = load_dataset("toy:8gaussians", split="test").data[:1500]
    prior = torch.randn(1500, 2, generator=torch.Generator().manual_seed(5))
    assert sliced_wasserstein(samples, data) < 0.3 * sliced_wasserstein(prior, data)


def test_edm_resume_is_bitwise_exact(tmp_path):
    Trainer(edm_toy_config(steps=8), tmp_path / "straight", progress=False).run()
    Trainer(edm_toy_config(steps=4), tmp_path / "resumed", progress=False).run()
    Trainer(edm_toy_config(steps=8), tmp_path / "resumed", resume=True, progress=False).run()
    straight = load_denoiser(tmp_path / "straight" / "checkpoint.safetensors")[1].tensors
    resumed = load_denoiser(tmp_path / "resumed" / "checkpoint.safetensors")[1].tensors
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight if not k.startswith("rng."))


@pytest.mark.parametrize("spec,message", [
    ({"precond": {"kind": "edm"}}, "train.loss 'edm' goes with precond.kind 'edm'"),
    ({"train": {"loss": "edm"}}, "train.loss 'edm' goes with precond.kind 'edm'"),
    ({"precond": {"kind": "edm", "sigma_data": 0}}, "precond.sigma_data must be > 0"),
    ({"precond": {"kind": "edm", "rho": 7}}, "precond: unknown field"),
    ({"precond": {"kind": "ve"}}, "precond.kind must be vp or edm"),
    ({"precond": {"kind": "edm"}, "prediction": "v", "train": {"loss": "edm"}}, "prediction applies to the vp"),
])
def test_edm_config_errors(spec, message):
    with pytest.raises(DifflabError, match=message):
        ExperimentConfig.from_dict(spec)


def test_an_edm_model_samples_from_the_cli_on_its_own_grid(tmp_path, capsys):
    from test_guidance import run_cli

    checkpoint = Trainer(edm_toy_config(steps=2), tmp_path / "run", progress=False).run().checkpoint
    code, out, err = run_cli(capsys, "sample", str(checkpoint), "--sampler", "heun", "--steps", "4", "--n", "8",
                             "--out", str(tmp_path / "s.npz"))
    assert code == 0, err
    assert np.load(tmp_path / "s.npz")["points"].shape == (8, 2)
    code, _, err = run_cli(capsys, "sample", str(checkpoint), "--grid", "trailing", "--steps", "4", "--n", "2",
                           "--out", str(tmp_path / "t.npz"))
    assert code == 2 and "grid 'trailing' spaces the timesteps of a discrete schedule" in err


def test_likelihood_refuses_an_edm_model():
    from difflab.likelihood.evaluate import images_bits_per_dim

    precond = EDMPrecond(EDMConfig())
    with pytest.raises(DifflabError, match="likelihoods are computed for VP models"):
        images_bits_per_dim(Denoiser(ExactF(precond), precond), torch.zeros(1, 1, 4, 4))


def test_the_server_runs_an_edm_model_on_its_own_grid(tmp_path):
    from fastapi.testclient import TestClient

    from difflab.nets import build_network
    from difflab.serve.app import create_app
    from difflab.serve.model import load_served_model
    from difflab.train.checkpoint import save_checkpoint

    config = ExperimentConfig.from_dict({
        "network": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                    "attention_levels": [1], "head_dim": 8, "groups": 4},
        "precond": {"kind": "edm"}, "train": {"loss": "edm"}, "data_shape": [1, 16, 16]})
    path = tmp_path / "edm.safetensors"
    save_checkpoint(path, config, 0, model=build_network(config.network))
    with TestClient(create_app(load_served_model(path))) as client:
        response = client.post("/sdapi/v1/txt2img", json={"sampler_name": "DPM++ 2M", "steps": 3, "width": 16,
                                                          "height": 16})
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["grid"] == "karras"
