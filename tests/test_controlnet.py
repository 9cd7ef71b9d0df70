"""ControlNet: a fresh one changes nothing bit for bit, training leaves the base frozen and uncopied, control scale 0
is no control, several are summed, the modes weight the residuals as stated, and every sampler runs with it."""

import math

import pytest
import torch

from difflab.conditioning import Condition
from difflab.errors import DifflabError
from difflab.nets.controlnet import (
    AppliedControl,
    ControlledNet,
    ControlNet,
    soft_weights,
    with_control,
)
from difflab.pipelines.control import ControlUnit
from difflab.pipelines.guidance import GuidanceRequest
from difflab.pipelines.request import Request, plan_request
from difflab.train.checkpoint import (
    load_checkpoint,
    load_denoiser,
    save_checkpoint,
    sha256_file,
)
from tiny_models import TINY_UNET, write_random_model

CLASSES = ("Coat", "Bag", "Sneaker")


def write_base(path, size=16, cond="class", classes=CLASSES):
    """A tiny class-conditional U-Net with random weights (its zero-initialised layers too, so it is not trivial)."""
    return write_random_model(path, {"network": {**TINY_UNET, "num_classes": len(classes)},
                                     "schedule": {"kind": "linear", "timesteps": 100}, "train": {"cond": cond},
                                     "data_shape": [1, size, size], "class_names": list(classes)})


def trained_like(net: ControlNet, seed: int = 1) -> ControlNet:
    """The ControlNet with random zero convs and hint output, as if trained, so its control shows."""
    generator = torch.Generator().manual_seed(seed)
    convs = [*net.zero_convs, net.mid_zero_conv, net.hint[-1]]
    for conv in convs:
        for p in conv.parameters():
            p.data = torch.randn(p.shape, generator=generator) * 0.3
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    denoiser, checkpoint = load_denoiser(write_base(tmp_path_factory.mktemp("base") / "base.safetensors"))
    return denoiser, checkpoint.config


def inputs(n=4, size=16):
    torch.manual_seed(3)
    x, c_noise = torch.randn(n, 1, size, size), torch.rand(n) * 99
    cond = with_control(Condition(torch.tensor([0, 1, 2, -1][:n])), torch.rand(n, 1, size, size))
    return x, c_noise, cond


def test_a_fresh_controlnet_leaves_the_base_output_bitwise_unchanged(base):
    denoiser, _ = base
    net = ControlNet.from_unet(denoiser.net, "canny")
    x, c_noise, cond = inputs()
    controlled = ControlledNet(denoiser.net, [AppliedControl(net, slice(0, 1), (1.0,) * net.residual_count)])
    with torch.no_grad():
        assert torch.equal(controlled(x, c_noise, cond), denoiser.net(x, c_noise, cond))
    skips, middle = net(x, c_noise, cond, cond.tensors["control"].value, torch.ones(4, dtype=torch.bool))
    assert all(torch.equal(s, torch.zeros_like(s)) for s in [*skips, middle])
    # the trunk is a copy of the base's encoder and middle
    trunk = net.trunk.state_dict()
    assert all(torch.equal(v, denoiser.net.state_dict()[k]) for k, v in trunk.items())


def test_residuals_of_several_controlnets_are_summed_and_absent_rows_get_none(base):
    denoiser, _ = base
    a, b = (trained_like(ControlNet.from_unet(denoiser.net, "canny"), seed) for seed in (1, 2))
    x, c_noise, _ = inputs()
    images = torch.rand(4, 2, 16, 16)
    present = torch.tensor([True, True, False, True])
    cond = with_control(Condition(torch.tensor([0, 1, 2, 0])), images, present)
    weights_a, weights_b = (0.5,) * a.residual_count, soft_weights(2.0, b.residual_count)
    controlled = ControlledNet(denoiser.net, [AppliedControl(a, slice(0, 1), weights_a),
                                              AppliedControl(b, slice(1, 2), weights_b)])
    with torch.no_grad():
        sa, ma = a(x, c_noise, cond, images[:, :1], present)
        sb, mb = b(x, c_noise, cond, images[:, 1:], present)
        down = [wa * u + wb * v for wa, wb, u, v in zip(weights_a, weights_b, sa, sb)]
        expected = denoiser.net(x, c_noise, cond, down_residuals=down, mid_residual=weights_a[-1] * ma + weights_b[-1] * mb)
        got = controlled(x, c_noise, cond)
        assert torch.allclose(got, expected, atol=1e-6)
        assert not torch.allclose(got, denoiser.net(x, c_noise, cond), atol=1e-3)
        assert torch.equal(got[2], denoiser.net(x, c_noise, cond)[2])  # no control on that row: the base's output


def test_soft_weights_are_the_originals_guess_mode_weights():
    weights = soft_weights(1.0, 13)  # SD 1.5's 13 residuals: [strength * 0.825 ** (12 - i) for i in range(13)]
    assert weights == tuple(0.825 ** float(12 - i) for i in range(13))
    assert 0.09 < weights[0] < 0.1 and weights[-1] == 1.0  # 0.825 ** 12 = 0.099
    assert math.isclose(soft_weights(2.0, 2)[0], 1.65)


def controlled_plan(denoiser, config, units, **request):
    defaults = {"label": 1, "sampler": "ddim", "steps": 4, "n": 2, "seed": 5}
    return plan_request(Request(controls=tuple(units), **{**defaults, **request}), denoiser, config)


def test_control_scale_zero_equals_no_control_and_scale_one_differs(base):
    denoiser, config = base
    net = trained_like(ControlNet.from_unet(denoiser.net, "silhouette"))
    image = torch.rand(1, 1, 16, 16)
    plain = controlled_plan(denoiser, config, []).sample()
    zero = controlled_plan(denoiser, config, [ControlUnit(net, image, scale=0.0)]).sample()
    one = controlled_plan(denoiser, config, [ControlUnit(net, image, scale=1.0)]).sample()
    assert torch.equal(zero, plain)
    assert (one - plain).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["balanced", "prompt", "controlnet"])
def test_control_modes_weight_the_residuals_and_cfg_halves_as_stated(base, mode):
    denoiser, config = base
    net = trained_like(ControlNet.from_unet(denoiser.net, "canny"))
    image = torch.rand(1, 1, 16, 16)
    unit = ControlUnit(net, image, scale=0.7, mode=mode)
    plan = controlled_plan(denoiser, config, [unit], guidance=GuidanceRequest(cfg=2.0))
    (applied,) = plan.denoiser.net.controls
    count = net.residual_count
    expected = (0.7,) * count if mode == "balanced" else tuple(0.7 * 0.825 ** (count - 1 - i) for i in range(count))
    assert applied.weights == pytest.approx(expected)
    assert torch.equal(plan.cond.tensors["control"].value, image.expand(2, -1, -1, -1))
    negative = plan.guidance.negative
    if mode == "controlnet":  # the unconditional half of CFG runs without control
        assert negative is None
    else:
        assert torch.equal(negative.tensors["control"].value, image) and bool(negative.tensors["control"].present.all())
    plan.sample()


def test_guidance_start_and_end_are_fractions_of_the_steps(base):
    denoiser, config = base
    net = trained_like(ControlNet.from_unet(denoiser.net, "canny"))
    steps = 10
    plan = controlled_plan(denoiser, config, [ControlUnit(net, torch.rand(1, 1, 16, 16), start=0.2, end=0.5)],
                           steps=steps)
    (applied,) = plan.denoiser.net.controls
    from difflab.grids import make_grid

    sigmas = make_grid(denoiser.schedule, steps, plan.sampler.grid)
    _, c_noise = denoiser.precond.inputs(torch.zeros(steps, 1), sigmas[:-1])
    active = applied.active(c_noise.float()).tolist()
    assert active == [0.2 <= i / steps <= 0.5 for i in range(steps)]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "heun", "dpmpp_2m", "dpmpp_2m_sde"])
def test_every_sampler_runs_controlled_with_cfg(base, sampler):
    denoiser, config = base
    net = trained_like(ControlNet.from_unet(denoiser.net, "canny"))
    plan = controlled_plan(denoiser, config, [ControlUnit(net, torch.rand(1, 1, 16, 16))], sampler=sampler, steps=3,
                           n=1, guidance=GuidanceRequest(cfg=1.0))
    x = plan.sample()
    assert x.shape == (1, 1, 16, 16) and torch.isfinite(x).all()


def test_a_control_image_of_another_size_is_refused(base):
    denoiser, config = base
    net = ControlNet.from_unet(denoiser.net, "canny")
    with pytest.raises(DifflabError, match=r"control image must be \[1, 1, 16, 16\]"):
        controlled_plan(denoiser, config, [ControlUnit(net, torch.rand(1, 1, 8, 8))])
    with pytest.raises(DifflabError, match="scale must be >= 0"):
        ControlUnit(net, torch.rand(1, 1, 16, 16), scale=-1.0)
    with pytest.raises(DifflabError, match="0 <= start <= end <= 1"):
        ControlUnit(net, torch.rand(1, 1, 16, 16), start=0.6, end=0.4)


def test_training_keeps_the_base_frozen_and_out_of_the_checkpoint(tmp_path):
    from difflab.train.controlnet import (
        ControlNetTrainConfig,
        load_controlnet,
        train_controlnet,
    )

    base_path = write_base(tmp_path / "base.safetensors", size=28, classes=tuple(f"c{i}" for i in range(10)))
    before_sha = sha256_file(base_path)
    base_weights = {k: v.clone() for k, v in load_denoiser(base_path)[0].net.state_dict().items()}
    cfg = ControlNetTrainConfig(steps=3, batch=4, warmup=1, checkpoint_every=100, log_every=1, device="cpu")
    result = train_controlnet(base_path, "silhouette", cfg, tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(result.checkpoint, kind="controlnet")
    assert checkpoint.step == 3 and checkpoint.optimizer_groups is None
    assert checkpoint.refs["base"].sha256 == before_sha == sha256_file(base_path)
    assert checkpoint.refs["base"].path == str(base_path.resolve())
    names = {k.split(".", 1)[1] for k in checkpoint.tensors}
    assert all(n.startswith(("trunk.", "hint.", "zero_convs.", "mid_zero_conv.")) for n in names)
    assert not any(n.startswith(("up.", "conv_out", "norm_out", "base.")) for n in names)  # no decoder, no base
    assert torch.equal(load_denoiser(base_path)[0].net.state_dict()["conv_out.weight"], base_weights["conv_out.weight"])
    net, _ = load_controlnet(result.checkpoint)
    assert net.mid_zero_conv.weight.abs().sum() > 0  # the zero convs have left zero
    assert net.config.control == "silhouette"



def test_sample_command_takes_control_flags(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from difflab.cli import main
    from difflab.train.controlnet import ControlNetSpec

    base_path = write_base(tmp_path / "base.safetensors")
    net = trained_like(ControlNet.from_unet(load_denoiser(base_path)[0].net, "silhouette"))
    control_path = tmp_path / "controlnet.safetensors"
    save_checkpoint(control_path, ControlNetSpec(net.config, (1, 16, 16)), 1, kind="controlnet", model=net)
    image = tmp_path / "disc.png"
    yy, xx = np.mgrid[:40, :40]
    Image.fromarray(((yy - 20) ** 2 + (xx - 20) ** 2 < 150).astype(np.uint8) * 255).save(image)
    common = ["sample", str(base_path), "--n", "2", "--steps", "2", "--class", "0", "--cfg", "1", "--threads", "1"]
    out = tmp_path / "out.npz"
    assert main([*common, "--control", str(image), "--control-model", str(control_path), "--control-scale", "0.5",
                 "--guess-mode", "--control-start", "0", "--control-end", "0.5", "--out", str(out)]) == 0
    assert out.is_file()
    assert main([*common, "--control-scale", "0.5", "--out", str(out)]) == 2
    assert "--control-scale needs --control IMAGE" in capsys.readouterr().err
    assert main([*common, "--control", str(image), "--control-model", str(control_path), "--control-scale", "1",
                 "--control-scale", "2", "--out", str(out)]) == 2
    assert "one value for all or one per --control" in capsys.readouterr().err


def test_an_interrupted_controlnet_run_resumes_exactly(tmp_path, monkeypatch):
    from difflab.train.controlnet import ControlNetTrainConfig, train_controlnet
    from difflab.train.loop import TrainingLoop

    monkeypatch.setattr("difflab.train.loop.plot_loss", lambda *args: None)
    base_path = write_base(tmp_path / "base.safetensors", size=28, classes=tuple(f"c{i}" for i in range(10)))
    cfg = ControlNetTrainConfig(steps=3, batch=4, warmup=1, checkpoint_every=100, log_every=1, device="cpu")
    straight = train_controlnet(base_path, "silhouette", cfg, tmp_path / "straight", progress=False).checkpoint
    train_step = TrainingLoop.train_step

    def interrupted(self):  # Ctrl-C before the second step
        if self.step == 1:
            raise KeyboardInterrupt
        return train_step(self)

    with monkeypatch.context() as patch:
        patch.setattr(TrainingLoop, "train_step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train_controlnet(base_path, "silhouette", cfg, tmp_path / "resumed", progress=False)
    steps = []
    with monkeypatch.context() as patch:
        patch.setattr(TrainingLoop, "train_step", lambda self: steps.append(self.step) or train_step(self))
        resumed = train_controlnet(base_path, "silhouette", cfg, tmp_path / "resumed", progress=False, resume=True)
    assert steps == [1, 2]  # continued from the saved step, not started again
    a, b = load_checkpoint(straight, kind="controlnet"), load_checkpoint(resumed.checkpoint, kind="controlnet")
    assert a.step == b.step == 3 and a.tensors.keys() == b.tensors.keys()
    assert all(torch.equal(value, b.tensors[key]) for key, value in a.tensors.items())
    with pytest.raises(DifflabError, match="finished controlnet \\(step 3\\); nothing to resume"):
        train_controlnet(base_path, "silhouette", cfg, tmp_path / "resumed", progress=False, resume=True)
