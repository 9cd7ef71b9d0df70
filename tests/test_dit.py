"""The Diffusion Transformer: adaLN-Zero starts as the identity, patches round-trip, and a tiny DiT trains, samples
with every sampler and CFG, saves as a component and runs under the EDM preconditioning."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.conditioning import Condition, TextEmbedding
from difflab.errors import DifflabError
from difflab.guidance import Guidance
from difflab.nets import build_network, network_config, network_spec
from difflab.nets.dit import DiT, DiTBlock, DiTConfig, named_size, patchify, unpatchify
from difflab.nets.flops import forward_flops, parameter_count
from difflab.pipelines.generate import generate
from difflab.samplers import SAMPLERS
from difflab.train.checkpoint import build_denoiser, load_denoiser, save_checkpoint
from difflab.train.config import ExperimentConfig
from difflab.train.trainer import Trainer

TINY = DiTConfig(patch_size=2, hidden_size=16, depth=2, num_heads=2)
SHAPE = (1, 8, 8)


def perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """The network with every weight random, so the zero-initialised layers no longer hide the input and condition."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
    return net


def text(rows: int, null_rows: int = 0, dim: int = 12) -> TextEmbedding:
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(rows, 5, dtype=torch.bool)
    mask[:null_rows] = False
    tokens, pooled = torch.randn(rows, 5, dim, generator=generator), torch.randn(rows, dim, generator=generator)
    return TextEmbedding(tokens, mask, pooled)


def test_fresh_dit_block_is_the_identity_and_a_fresh_dit_outputs_zeros():
    config = replace(TINY, text_dim=12)
    block = DiTBlock(config)
    h, c = torch.randn(3, 16, 16), torch.randn(3, 16)
    tokens = text(3)
    assert torch.equal(block(h, c, (tokens.tokens, tokens.mask)), h)
    net = DiT(replace(config, num_classes=4, learned_variance=True))
    out = net(torch.randn(3, *SHAPE), torch.rand(3) * 999, Condition(torch.tensor([0, 3, -1]), tokens))
    assert out.shape == (3, 2, 8, 8) and not out.any()


@pytest.mark.parametrize("p", [1, 2, 4, 7])
def test_patchify_then_unpatchify_is_the_identity(p):
    x = torch.randn(2, 3, 28, 56)
    tokens = patchify(x, p)
    assert tokens.shape == (2, (28 // p) * (56 // p), p * p * 3)
    assert torch.equal(tokens[:, 0].reshape(2, p, p, 3).permute(0, 3, 1, 2), x[:, :, :p, :p])  # first patch, top left
    assert torch.equal(unpatchify(tokens, p, 28, 56), x)


def test_patch_size_that_does_not_divide_the_input_is_named():
    with pytest.raises(DifflabError, match="patch_size 3 must divide .* 28x28"):
        DiT(replace(TINY, patch_size=3))(torch.randn(1, 1, 28, 28), torch.zeros(1))


@pytest.mark.parametrize("learned_variance, channels", [(False, 3), (True, 6)])
def test_output_shape_any_size_and_learned_variance(learned_variance, channels):
    net = perturbed(DiT(replace(TINY, in_channels=3, learned_variance=learned_variance)))
    out = net(torch.randn(2, 3, 12, 20), torch.rand(2) * 999)
    assert out.shape == (2, channels, 12, 20) and torch.isfinite(out).all()


def test_bad_config_fields_are_named():
    with pytest.raises(DifflabError, match="hidden_size 18 must be divisible by num_heads=4"):
        DiTConfig(hidden_size=18, num_heads=4)
    with pytest.raises(DifflabError, match="network.patch_size must be > 0"):
        DiTConfig(patch_size=0)
    with pytest.raises(DifflabError, match="DiT-SIZE/PATCH"):
        named_size("DiT-XXL/2")


def test_named_sizes_and_counted_flops():
    assert named_size("DiT-S/4") == {"depth": 6, "hidden_size": 128, "num_heads": 4, "patch_size": 4}
    net = DiT(TINY)
    T, D, P, M, N = 16, 16, 4, 64, TINY.depth  # tokens, width, p*p*C, MLP width, blocks of the 8x8 input
    # 2 flops per multiply-add: noise MLP, patch embedding, per block (modulation, qkv, q k^T and a v, projection,
    # MLP), final modulation and linear
    block = 2 * (D * 6 * D + T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * M)
    expected = 2 * (2 * D * D + T * P * D) + N * block + 2 * (D * 2 * D + T * D * P)
    assert forward_flops(net, SHAPE) == expected
    assert parameter_count(net) == sum(p.numel() for p in net.parameters())


def class_text_denoiser():
    config = ExperimentConfig(network=replace(TINY, num_classes=3, text_dim=12), data_shape=SHAPE)
    return build_denoiser(perturbed(build_network(config.network)), config).eval()


def test_null_rows_of_a_batch_match_no_condition():
    net = class_text_denoiser().net
    x, c_noise = torch.randn(1, *SHAPE).expand(3, -1, -1, -1), torch.full((3,), 300.0)
    cond = Condition(torch.tensor([-1, 1, -1]), text(3, null_rows=1))
    out, unconditional = net(x, c_noise, cond), net(x[:1], c_noise[:1])
    torch.testing.assert_close(out[:1], unconditional)  # null label and null text: the unconditional model
    assert (out[1] - out[0]).abs().max() > 1e-3 and (out[2] - out[0]).abs().max() > 1e-3  # a label, a text


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_a_dit_with_cfg(name):
    denoiser = class_text_denoiser()
    cond = Condition(torch.tensor([0, 1, 2]), text(3))
    run = dict(sampler=name, steps=3, grid="karras", cond=cond, batch=3)
    guided = generate(denoiser, SHAPE, 3, guidance=Guidance(cfg=2.0), **run)
    assert guided.shape == (3, *SHAPE) and torch.isfinite(guided).all()
    if name == "ddim":
        assert (guided - generate(denoiser, SHAPE, 3, **run)).abs().max() > 1e-3


def dit_image_config(tmp_path, loss: str = "simple", **train) -> ExperimentConfig:
    """A DiT of patch size 4 on a folder of 32 images 28x28: one disk at random shades, which a few dozen steps
    can learn; loss "edm" comes with the EDM preconditioning."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rows, cols = np.mgrid[:28, :28]
    disk = ((rows - 13.5) ** 2 + (cols - 13.5) ** 2 < 81).astype(np.float64)
    for i, shade in enumerate(np.random.default_rng(0).uniform(60, 255, 32)):
        Image.fromarray((disk * shade).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return ExperimentConfig.from_dict({
        "network": network_spec(replace(TINY, patch_size=4, hidden_size=32)),
        "precond": {"kind": "edm"} if loss == "edm" else {"kind": "vp"},
        "train": {"data": str(folder), "loss": loss, "batch": 8, "lr": 2e-3, "warmup": 5, "log_every": 5,
                  "sample_every": 10_000, "checkpoint_every": 10_000, "sample_steps": 2, **train},
    })


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_training_a_dit_lowers_the_loss(tmp_path):
    config = dit_image_config(tmp_path, steps=40)
    Trainer(config, tmp_path / "run", progress=False).run()
    loss = losses(tmp_path / "run")
    assert sum(loss[-2:]) / 2 < 0.5 * loss[0], loss


def test_dit_round_trips_through_the_component_format(tmp_path):
    config = ExperimentConfig(network=replace(TINY, learned_variance=True), data_shape=SHAPE, train=replace(
        ExperimentConfig().train, loss="hybrid"))
    assert network_config(json.loads(json.dumps(network_spec(config.network)))) == config.network
    net = perturbed(build_network(config.network))
    save_checkpoint(tmp_path / "dit.safetensors", config, 7, model=net)
    loaded, checkpoint = load_denoiser(tmp_path / "dit.safetensors")
    assert checkpoint.config == config and isinstance(loaded.net, DiT)
    x, sigma = torch.randn(2, *SHAPE), torch.tensor([0.3, 12.0])
    mean, v = build_denoiser(net, config).eval().with_variance(x, sigma)
    loaded_mean, loaded_v = loaded.with_variance(x, sigma)
    assert torch.equal(mean, loaded_mean) and torch.equal(v, loaded_v)


def test_edm_preconditioning_trains_and_samples_a_dit(tmp_path):
    config = dit_image_config(tmp_path, "edm", steps=40)
    result = Trainer(config, tmp_path / "run", progress=False).run()
    loss = losses(tmp_path / "run")
    assert sum(loss[-2:]) / 2 < 0.8 * loss[0], loss
    denoiser, checkpoint = load_denoiser(result.checkpoint)
    assert checkpoint.config.precond.kind == "edm" and isinstance(denoiser.net, DiT)
    x = generate(denoiser, checkpoint.config.data_shape, 2, sampler="heun", steps=4, grid="karras", batch=2)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()

