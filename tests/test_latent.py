"""Latent diffusion: the KL autoencoder and its training, the latent scale, `difflab train --autoencoder`, and the
decode stage shared by sample, eval and serve; pixel-only operations refused on a latent model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from test_guidance import run_cli

from difflab.cli import main
from difflab.conditioning import Condition
from difflab.data import load_dataset
from difflab.errors import DifflabError
from difflab.latent import LatentSpace, load_autoencoder
from difflab.model import load_model
from difflab.nets.autoencoder import AutoencoderConfig, KLAutoencoder, kl_to_standard_normal
from difflab.pipelines.generate import generate
from difflab.samplers import SAMPLERS
from difflab.serve.app import create_app
from difflab.serve.model import load_served_model
from difflab.train.autoencoder import AutoencoderObjective, train_autoencoder
from difflab.train.autoencoder_config import AutoencoderTrainConfig
from difflab.train.checkpoint import load_checkpoint

TINY_AE = AutoencoderConfig(channels=8, groups=4, latent_channels=2, factor=4)
TINY_UNET = {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [1],
             "head_dim": 8, "groups": 4}
BUNDLED_AE = Path(__file__).resolve().parents[1] / "difflab/assets/fashion_mnist_latent/autoencoder.safetensors"


def write_images(root: Path) -> Path:
    """Two classes of 28x28 images: a bright top half or a bright bottom half."""
    rng = np.random.default_rng(0)
    for name, half in (("top", np.s_[:14]), ("bottom", np.s_[14:])):
        (root / name).mkdir(parents=True)
        for i in range(8):
            image = rng.integers(0, 60, (28, 28)).astype(np.uint8)
            image[half] += 180
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """A tiny autoencoder (f = 4, 2 latent channels) trained a few steps, and a class+text latent model on it."""
    root = tmp_path_factory.mktemp("latent")
    data = write_images(root / "data")
    ae = train_autoencoder(AutoencoderTrainConfig(data=str(data), steps=4, batch=4, warmup=1), root / "ae",
                           network=TINY_AE, progress=False).checkpoint
    config = root / "tiny.json"
    config.write_text(json.dumps({"network": TINY_UNET, "schedule": {"kind": "linear", "timesteps": 100},
                                  "train": {"warmup": 1, "sample_every": 1000, "sample_steps": 2}}))
    assert main(["train", "--config", str(config), "--data", str(data), "--autoencoder", str(ae), "--steps", "3",
                 "--batch", "4", "--cond", "class+text", "--out", str(root / "model")]) == 0
    return data, ae, root / "model" / "checkpoint.safetensors"


def test_kl_term_matches_torch_distributions():
    mean, logvar = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    q, prior = torch.distributions.Normal(mean, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    expected = torch.distributions.kl_divergence(q, prior).flatten(1).sum(1)
    torch.testing.assert_close(kl_to_standard_normal(mean, logvar), expected)
    assert torch.equal(kl_to_standard_normal(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2))  # q = prior


def test_autoencoder_shapes_and_bad_configs():
    net = KLAutoencoder(TINY_AE)
    mean, logvar = net.encode(torch.randn(2, 1, 28, 12))
    assert mean.shape == logvar.shape == (2, 2, 7, 3)
    assert net.decode(mean).shape == (2, 1, 28, 12)
    assert KLAutoencoder(AutoencoderConfig(factor=2, channels=8, groups=4)).encode(torch.randn(1, 1, 8, 8))[0].shape \
        == (1, 4, 4, 4)
    with pytest.raises(DifflabError, match="factor f must be one of 2, 4"):
        AutoencoderConfig(factor=8)
    with pytest.raises(DifflabError, match="sides divisible by f=4"):
        net.encode(torch.randn(1, 1, 30, 28))


def test_autoencoder_component_and_round_trip(latent_run):
    _, ae, _ = latent_run
    checkpoint = load_checkpoint(ae, kind="autoencoder")
    assert checkpoint.kind == "autoencoder" and checkpoint.optimizer_groups is None  # finished: weights and spec only
    assert checkpoint.config.network == TINY_AE and checkpoint.config.latent_shape == (2, 7, 7)
    assert json.loads((ae.parent / "config.json").read_text())["scale_factor"] == checkpoint.config.scale_factor
    latent = load_autoencoder(ae)
    assert not any(p.requires_grad for p in latent.parameters())
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    z = latent.encode(x)
    assert z.shape == (3, 2, 7, 7)
    # the scale cancels: decode(encode(x)) is the decoder's image of the posterior mean
    torch.testing.assert_close(latent.decode(z), latent.net.decode(latent.net.encode(x)[0]))


@pytest.mark.skipif(not BUNDLED_AE.is_file(), reason="bundled latent model not built")
def test_bundled_autoencoder_reconstructs_test_images():
    latent = load_autoencoder(BUNDLED_AE)
    x = load_dataset("fashion-mnist", "test").batch(torch.arange(200))[0]
    x_hat = latent.decode(latent.encode(x)).clamp(-1, 1)
    psnr = 10 * torch.log10(4 / (x_hat - x).square().mean())  # peak-to-peak 2 in [-1, 1]
    assert psnr > 20, psnr


def test_scale_factor_makes_the_training_latents_unit_variance(latent_run):
    data, ae, _ = latent_run
    images = load_dataset(str(data)).batch(torch.arange(16))[0]
    latent = load_autoencoder(ae)
    assert latent.scale != 1.0
    assert latent.encode(images).double().std().item() == pytest.approx(1.0, abs=1e-5)


def test_perceptual_term_refers_to_the_feature_net_and_needs_its_image_size():
    net = KLAutoencoder(TINY_AE)
    objective = AutoencoderObjective(net, AutoencoderTrainConfig(perceptual=1.0), (1, 28, 28))
    assert objective.frozen["feature_net"].kind == "feature-net"
    objective.bind(net)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    draw = objective.draw(None, x, None, torch.Generator().manual_seed(0))
    loss, _ = objective.loss(x, draw)
    plain = AutoencoderObjective(net, AutoencoderTrainConfig(), (1, 28, 28))
    plain.bind(net)
    assert (loss > plain.loss(x, draw)[0]).all()  # the perceptual distance of a poor reconstruction is > 0
    with pytest.raises(DifflabError, match="feature net of 1x28x28 images"):
        AutoencoderObjective(net, AutoencoderTrainConfig(perceptual=1.0), (1, 16, 16))


def test_interrupted_autoencoder_training_resumes_exactly(latent_run, tmp_path, monkeypatch, capsys):
    """Interrupted within step 5, after its noise was drawn and after the step-3 checkpoint: the resumed run must
    redraw step 5's noise from the saved stream (the classifier's test covers the interrupt right after a save)."""
    import difflab.train.autoencoder as training

    data, _, _ = latent_run
    cfg = AutoencoderTrainConfig(data=str(data), steps=6, batch=4, warmup=1, checkpoint_every=3)
    straight = train_autoencoder(cfg, tmp_path / "a", network=TINY_AE, progress=False)
    draw, draws = training.AutoencoderObjective.draw, []

    def draw_then_stop(self, *args):
        noise = draw(self, *args)
        draws.append(1)
        if len(draws) == 5:
            raise KeyboardInterrupt  # within step 5, after its noise was drawn: the save must roll the stream back
        return noise

    monkeypatch.setattr(training.AutoencoderObjective, "draw", draw_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(cfg, tmp_path / "b", network=TINY_AE, progress=False)
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "train-autoencoder", "--resume", "--out", str(tmp_path / "b"))
    assert code == 0, err
    a, b = load_checkpoint(straight.checkpoint, None), load_checkpoint(tmp_path / "b" / "autoencoder.safetensors", None)
    assert a.step == b.step == 6 and a.config.scale_factor == b.config.scale_factor
    for name, x in a.section("model").items():
        assert torch.equal(x, b.section("model")[name]), name
    code, _, err = run_cli(capsys, "train-autoencoder", "--resume", "--out", str(tmp_path / "b"))
    assert code == 2 and "holds a finished autoencoder (step 6); nothing to resume" in err


def test_latent_model_refers_to_its_autoencoder_and_never_copies_it(latent_run, tmp_path):
    _, ae, model_path = latent_run
    checkpoint = load_checkpoint(model_path)
    assert checkpoint.config.data_shape == (2, 7, 7) and checkpoint.config.network.in_channels == 2
    assert checkpoint.refs["autoencoder"].kind == "autoencoder"
    assert not any("encoder" in key for key in checkpoint.tensors)
    model = load_model(model_path)
    assert model.sample_shape == (2, 7, 7) and model.image_shape == (1, 28, 28)
    # a manifest may move the autoencoder (the bundled model does), but not change it
    moved = tmp_path / "ae.safetensors"
    shutil.copy(ae, moved)
    shutil.copy(model_path, tmp_path / "model.safetensors")
    manifest = tmp_path / "model.json"
    manifest.write_text(json.dumps({"denoiser": "model.safetensors", "autoencoder": "ae.safetensors"}))
    assert load_model(manifest).files["autoencoder"] == moved
    moved.write_bytes(moved.read_bytes() + b" ")
    with pytest.raises(DifflabError, match="has changed since it was referred to"):
        load_model(manifest)


def test_pixel_model_encode_and_decode_are_the_identity(tmp_path):
    from test_serve_api import write_checkpoint

    model = load_model(write_checkpoint(tmp_path / "checkpoint.safetensors"))
    x = torch.randn(2, 1, 16, 16)
    assert model.encode(x) is x and model.decode(x) is x and model.decoder is None
    assert model.sample_shape == model.image_shape == (1, 16, 16)
    manifest = tmp_path / "model.json"
    manifest.write_text(json.dumps({"denoiser": "checkpoint.safetensors", "autoencoder": "checkpoint.safetensors"}))
    with pytest.raises(DifflabError, match="names an autoencoder, but its denoiser was trained on pixels"):
        load_model(manifest)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_latent_model_samples_images_with_every_sampler(latent_run, sampler):
    model = load_model(latent_run[2])
    cond = Condition(torch.tensor([0, 1]), None)
    x = generate(model.denoiser, model.sample_shape, 2, sampler=sampler, steps=3, cond=cond, decode=model.decoder)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()


@pytest.fixture
def decodes(monkeypatch):
    """Counts the rows LatentSpace.decode turns into images."""
    rows, decode = [], LatentSpace.decode

    def counted(self, x):
        rows.append(len(x))
        return decode(self, x)

    monkeypatch.setattr(LatentSpace, "decode", counted)
    return rows


def test_sample_eval_and_serve_decode_alike(latent_run, tmp_path, capsys, decodes):
    model = str(latent_run[2])
    code, _, err = run_cli(capsys, "sample", model, "--n", "3", "--steps", "2", "--prompt", "a bright top",
                           "--cfg", "1", "--out", str(tmp_path / "s.npz"))
    assert code == 0, err
    sampled = np.load(tmp_path / "s.npz")["images"]
    assert sampled.shape == (3, 28, 28) and decodes == [3]
    code, out, err = run_cli(capsys, "eval", model, "--n", "10", "--steps", "2", "--save", str(tmp_path / "e.npz"),
                             "--json")
    assert code == 0, err
    assert np.load(tmp_path / "e.npz")["images"].shape == (10, 28, 28) and decodes == [3, 10]
    assert np.isfinite(json.loads(out)["fd"])
    served = load_served_model(model)
    assert (served.width, served.height) == (28, 28)
    with TestClient(create_app(served)) as client:
        response = client.post("/sdapi/v1/txt2img", json={"prompt": "a bright bottom", "steps": 2, "batch_size": 2})
        assert response.status_code == 200, response.text
        assert json.loads(response.json()["info"])["native_width"] == 28 and decodes == [3, 10, 2]
        refused = client.post("/sdapi/v1/txt2img", json={"steps": 2, "width": 56, "difflab_size_by": "model"})
        assert refused.status_code == 422 and "samples latents" in refused.text


@pytest.mark.parametrize("flags, message", [
    (["--threshold", "static"], "--threshold acts on pixels in [-1, 1]"),
    (["--threshold", "dynamic"], "--threshold acts on pixels in [-1, 1]"),
])
def test_pixel_only_guidance_is_refused_on_a_latent_model(latent_run, tmp_path, capsys, flags, message):
    code, _, err = run_cli(capsys, "sample", str(latent_run[2]), "--n", "1", "--steps", "2", *flags,
                           "--out", str(tmp_path / "x.png"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_likelihood_is_refused_on_a_latent_model(latent_run, capsys):
    code, _, err = run_cli(capsys, "nll", str(latent_run[2]), "--n", "2")
    assert code == 2 and "is a latent model" in err and len(err.strip().splitlines()) == 1
