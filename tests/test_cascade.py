"""Cascaded generation (Ho et al. 2021): noise-conditioning augmentation, the U-Net's concatenated image condition
and level embedding, the super-resolution training condition, and the base -> upsample -> super-resolution pipeline."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from cascade_models import tiny_config, tiny_denoiser, write_tiny
from test_training import image_config

from difflab.cli import main
from difflab.conditioning import Condition
from difflab.data import Dataset
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.images import to_uint8
from difflab.lowres import augment, downsample, upsample
from difflab.nets import network_config, network_spec
from difflab.nets.unet import UNet, UNetConfig
from difflab.pipelines.cascade import SuperResolution, low_res_condition, run_cascade
from difflab.pipelines.request import Request, plan_request
from difflab.train.checkpoint import load_checkpoint
from difflab.train.low_res import LowResConditions, downsampled
from difflab.train.trainer import Trainer

RUN = {"sampler": "ddim", "steps": 4, "grid": "trailing"}


@pytest.fixture(scope="module")
def stages():
    base_config, sr_config = tiny_config(8), tiny_config(16, low_res=8, augmentation=0.5)
    return (base_config, tiny_denoiser(base_config, 1)), (sr_config, tiny_denoiser(sr_config, 2))


def cascade(stages, n=3, seed=5, label=None, noise_level=0.2, batch=64, sr_sampler="euler", sr_steps=3):
    (base_config, base), (sr_config, sr) = stages
    base_plan = plan_request(Request(label=label, n=n, seed=seed, batch=batch, **RUN), base, base_config)
    sr_plan = plan_request(Request(label=label, n=n, seed=seed, batch=batch, sampler=sr_sampler, steps=sr_steps),
                           sr, sr_config)
    return run_cascade(base_plan, SuperResolution(sr_plan, sr_config, noise_level))


def test_augmentation_at_level_zero_is_no_augmentation():
    low_res, noise = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    assert torch.equal(augment(low_res, torch.zeros(2), noise), low_res)
    assert torch.equal(augment(low_res, torch.tensor([0.0, 0.5]), noise)[1], low_res[1] + 0.5 * noise[1])
    # training: a run whose largest level is 0 conditions on the clean upsampled low-res image
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    cond = LowResConditions(8, 0.0)(x0, None, torch.Generator().manual_seed(0))
    assert torch.equal(cond.tensors["low_res"].value, upsample(downsample(x0, 8), (16, 16)))
    assert not cond.tensors["noise_level"].value.any()
    # the network: level 0 given is the same as no level given
    sr_config = tiny_config(16, low_res=8, augmentation=0.5)
    net = tiny_denoiser(sr_config).net
    x, c_noise, image = torch.randn(2, 1, 16, 16), torch.tensor([10.0, 50.0]), torch.randn(2, 1, 16, 16)
    given = net(x, c_noise, Condition(tensors={"low_res": image, "noise_level": torch.zeros(2)}))
    assert torch.equal(given, net(x, c_noise, Condition(tensors={"low_res": image})))
    assert not torch.allclose(given, net(x, c_noise, Condition(tensors={"low_res": image,
                                                                        "noise_level": torch.full((2,), 0.3)})))


def test_training_draws_levels_in_range_and_is_reproducible():
    x0 = torch.rand(64, 1, 16, 16) * 2 - 1
    draws = [LowResConditions(8, 0.5)(x0, Condition(labels=torch.arange(64) % 3), torch.Generator().manual_seed(3))
             for _ in range(2)]
    level = draws[0].tensors["noise_level"].value
    assert 0 <= level.min() and level.max() <= 0.5 and level.std() > 0.1
    assert torch.equal(draws[0].tensors["low_res"].value, draws[1].tensors["low_res"].value)
    assert torch.equal(draws[0].labels, torch.arange(64) % 3)  # the other conditions are kept
    clean = upsample(downsample(x0, 8), (16, 16))
    residual = (draws[0].tensors["low_res"].value - clean) / level.view(-1, 1, 1, 1)  # the noise eps ~ N(0, 1)
    assert abs(float(residual.std()) - 1) < 0.05


def test_downsampled_data_is_the_block_mean():
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    small = downsampled(Dataset("d", "image", images), 14)
    assert small.shape == (1, 14, 14) and small.data.dtype == torch.uint8
    assert torch.equal(small.data, images.float().unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2)).round().byte())
    with pytest.raises(DifflabError, match="multiple of 10"):
        downsample(images.float(), 10)


def test_upsampling_modes_are_the_web_uis_latent_upscalers():
    """The UI's latent upscale modes (modules/shared.py) are interpolate's mode and antialias flag: a 3 -> 7 upsample
    with the centre-sampled bilinear weights by hand, and each antialiased mode a different filter (bicubic's even
    when growing: another cubic), nearest-exact the rounding one."""
    x = torch.arange(9.0).view(1, 1, 3, 3)
    source = ((torch.arange(7.0) + 0.5) * 3 / 7 - 0.5).clamp(min=0)  # output pixel centres in input coordinates
    low = source.floor()
    weight = source - low
    by_hand = x[0, 0, 0, low.long()] * (1 - weight) + x[0, 0, 0, (low + 1).clamp(max=2).long()] * weight
    assert torch.allclose(upsample(x, (7, 7), "bilinear")[0, 0, 0], by_hand)
    assert torch.allclose(upsample(x, (7, 7), "bilinear-antialiased"), upsample(x, (7, 7), "bilinear"))
    assert not torch.allclose(upsample(x, (2, 2), "bilinear-antialiased"), upsample(x, (2, 2), "bilinear"))
    assert not torch.allclose(upsample(x, (7, 7), "bicubic-antialiased"), upsample(x, (7, 7), "bicubic"))
    assert upsample(x, (7, 7), "nearest")[0, 0, 0].tolist() == [0, 0, 0, 1, 1, 2, 2]  # floor(i * 3 / 7)
    assert upsample(x, (7, 7), "nearest-exact")[0, 0, 0].tolist() == [0, 0, 1, 1, 1, 2, 2]  # floor((i + .5) * 3 / 7)
    with pytest.raises(DifflabError, match="upsampling mode must be one of nearest, nearest-exact, bilinear"):
        upsample(x, (7, 7), "lanczos")


def test_concatenation_is_a_convolution_over_the_stacked_channels():
    """conv_in(x) + cond_in(c) equals one convolution over [x, c] (SR3's channel concatenation)."""
    net = UNet(UNetConfig(channels=8, channel_mult=(1,), attention_levels=(), head_dim=8, groups=4,
                          concat_conditions={"low_res": 1}))
    torch.nn.init.normal_(net.cond_in.weight)
    x, image = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    weight = torch.cat([net.conv_in.weight, net.cond_in.weight], 1)
    stacked = torch.nn.functional.conv2d(torch.cat([x, image], 1), weight, net.conv_in.bias, padding=1)
    cond = Condition(tensors={"low_res": image})
    emb, context = net.embedding(x, torch.tensor([1.0, 2.0]), cond)
    first_skip = net.encode(x, emb, context, net.concatenated(x, cond))[0]  # the input convolution's output
    assert torch.allclose(first_skip, stacked, atol=1e-5)
    with pytest.raises(DifflabError, match=r"condition 'low_res' must be \[B, 1, 8, 8\]"):
        net.concatenated(x, Condition(tensors={"low_res": torch.zeros(2, 1, 4, 4)}))
    with pytest.raises(DifflabError, match="concat_conditions"):
        UNetConfig(concat_conditions={"noise_level": 1})


def test_cascade_stage_shapes(stages):
    out = cascade(stages, n=3)
    assert out.low_res.shape == (3, 1, 8, 8) and out.samples.shape == (3, 1, 16, 16)
    assert torch.isfinite(out.samples).all()


def test_same_seed_same_cascade_output_whatever_the_batch(stages):
    first, again, rebatched = cascade(stages, seed=7), cascade(stages, seed=7), cascade(stages, seed=7, batch=2)
    assert torch.equal(first.low_res, again.low_res) and torch.equal(first.samples, again.samples)
    assert torch.allclose(first.samples, rebatched.samples, atol=1e-4)  # batched float sums differ in the last bits
    other = cascade(stages, seed=8)
    assert not torch.allclose(first.samples, other.samples)
    # the augmentation noise is its own stream: sample i's differs from its sampling noise and from sample j's
    tensors = low_res_condition(torch.zeros(2, 1, 8, 8), (16, 16), 1.0, seed=0)
    assert not torch.allclose(tensors["low_res"][0], tensors["low_res"][1])


def test_class_condition_reaches_both_stages(stages):
    (base_config, base), (sr_config, sr) = stages
    low_res = cascade(stages, label=1).low_res
    sr_of = {label: SuperResolution(plan_request(Request(label=label, n=3, seed=5, sampler="euler", steps=3), sr,
                                                 sr_config), sr_config, 0.2).run(low_res) for label in (0, 1)}
    assert not torch.allclose(sr_of[0], sr_of[1])  # the SR stage sees the class
    assert torch.equal(sr_of[1], cascade(stages, label=1).samples)
    assert not torch.allclose(low_res, cascade(stages, label=0).low_res)  # and so does the base


def test_cascade_refuses_what_does_not_fit(stages):
    (base_config, base), (sr_config, sr) = stages
    with pytest.raises(DifflabError, match=r"--noise-level must lie in \[0, 0.5\]"):
        cascade(stages, noise_level=0.6)
    plan = plan_request(Request(n=2, **RUN), base, base_config)
    wrong = replace(plan, shape=(1, 4, 4))
    sr_plan = plan_request(Request(n=2, **RUN), sr, sr_config)
    with pytest.raises(DifflabError, match=r"takes \[1, 8, 8\] low-resolution images; the base model makes \[1, 4"):
        run_cascade(wrong, SuperResolution(sr_plan, sr_config))
    with pytest.raises(DifflabError, match="needs a model trained with train.low_res"):
        run_cascade(plan, SuperResolution(plan, base_config))


def test_sample_cascade_command(tmp_path, stages):
    (base_config, _), (sr_config, _) = stages
    base, sr = write_tiny(tmp_path / "base.safetensors", base_config, 1), write_tiny(tmp_path / "sr.safetensors",
                                                                                     sr_config, 2)
    out = tmp_path / "x.npz"
    assert main(["sample", "--cascade", str(base), str(sr), "--n", "3", "--class", "1", "--steps", "4",
                 "--sr-sampler", "euler", "--sr-steps", "3", "--noise-level", "0.2", "--seed", "5",
                 "--out", str(out)]) == 0
    expected = to_uint8(cascade(stages, label=1).samples)
    assert np.array_equal(np.load(out)["images"], expected)
    # --sigmas names the base's levels only: the SR stage keeps its own 3-step grid
    levels = make_grid(stages[0][1].schedule, 4, "trailing")[:-1].tolist()
    assert main(["sample", "--cascade", str(base), str(sr), "--n", "3", "--class", "1", "--sampler", "ddim",
                 "--sigmas", ",".join(map(repr, levels)), "--sr-sampler", "euler", "--sr-steps", "3",
                 "--noise-level", "0.2", "--seed", "5", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out)["images"], expected)


def test_super_resolution_config_declares_its_conditions():
    config = UNetConfig(concat_conditions={"low_res": 1}, noise_level_embedding=True)
    assert config.accepts == {"low_res", "noise_level"}
    assert network_config(json.loads(json.dumps(network_spec(config)))) == config


def sr_training_config(tmp_path, **train):
    """test_training's tiny U-Net on 28x28 random images, as a 14 -> 28 super-resolution run."""
    return image_config(tmp_path, **{"low_res": 14, "low_res_augmentation": 0.5, **train})


def test_super_resolution_training_takes_the_condition_and_resumes_exactly(tmp_path):
    trainer = Trainer(sr_training_config(tmp_path, steps=2), tmp_path / "straight", progress=False)
    assert trainer.config.network.accepts == {"low_res", "noise_level"}
    trainer.run()
    Trainer(sr_training_config(tmp_path, steps=1), tmp_path / "resumed", progress=False).run()
    Trainer(sr_training_config(tmp_path, steps=2), tmp_path / "resumed", resume=True, progress=False).run()
    straight, resumed = (load_checkpoint(tmp_path / run / "checkpoint.safetensors") for run in ("straight", "resumed"))
    assert straight.config.train.low_res == 14
    for key, value in straight.section("ema").items():
        assert torch.equal(value, resumed.section("ema")[key]), key
    base = Trainer(sr_training_config(tmp_path, steps=1, low_res=None, low_res_augmentation=0.0, resolution=14),
                   tmp_path / "base", progress=False)
    assert base.config.data_shape == (1, 14, 14) and base.config.network.accepts == frozenset()
