"""The U-Net's encoder / middle / decoder split: additive residuals on the skips and the middle (ControlNet,
T2I-Adapter), the skip widths and strides a control branch builds on, and the trunk copy it starts from."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_UNET

from difflab.conditioning import Condition, TextEmbedding
from difflab.errors import DifflabError
from difflab.nets import build_network, network_config

TEXT_DIM = 16


def random_net(text: bool):
    """A tiny U-Net with every weight drawn at random, so no zero-initialised branch hides a change."""
    net = build_network(network_config({**TINY_UNET, "num_classes": 3, "text_dim": TEXT_DIM if text else None}))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def inputs(text: bool):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 11, 14, generator=g)  # odd size: the skips are ceil(H / stride) high
    words = TextEmbedding(torch.randn(2, 3, TEXT_DIM, generator=g), torch.ones(2, 3, dtype=torch.bool),
                          torch.randn(2, TEXT_DIM, generator=g))
    return x, torch.tensor([3.0, 700.0]), Condition(torch.tensor([0, 2]), words if text else None)


def zero_residuals(net, x):
    """Zeros shaped like each skip (from skip_widths and skip_strides alone) and like the middle's output."""
    B, _, H, W = x.shape
    down = [torch.zeros(B, c, math.ceil(H / s), math.ceil(W / s)) for c, s in zip(net.skip_widths, net.skip_strides)]
    return down, torch.zeros_like(down[-1])


@pytest.mark.parametrize("text", [False, True])
def test_zero_residuals_leave_the_output_unchanged_and_others_change_it(text):
    net = random_net(text)
    x, c_noise, cond = inputs(text)
    with torch.no_grad():
        plain = net(x, c_noise, cond)
        down, mid = zero_residuals(net, x)
        assert [tuple(s.shape) for s in net.features(x, c_noise, cond).skips] == [tuple(d.shape) for d in down]
        assert torch.equal(net(x, c_noise, cond, down_residuals=down, mid_residual=mid), plain)
        for i in (0, len(down) - 1):
            bumped = [d + (j == i) for j, d in enumerate(down)]
            assert not torch.allclose(net(x, c_noise, cond, down_residuals=bumped), plain)
        assert not torch.allclose(net(x, c_noise, cond, mid_residual=mid + 1), plain)


@pytest.mark.parametrize("text", [False, True])
def test_residuals_of_the_wrong_count_or_shape_give_one_line(text):
    net = random_net(text)
    x, c_noise, cond = inputs(text)
    down, mid = zero_residuals(net, x)
    with pytest.raises(DifflabError, match=f"down_residuals: expected {len(down)} tensors, one per skip "
                                           f"connection, got {len(down) - 1}"):
        net(x, c_noise, cond, down_residuals=down[:-1])
    down[2] = down[2][:, :1]
    with pytest.raises(DifflabError, match=r"down_residuals\[2\] has shape \(2, 1, 6, 7\), expected \(2, 8, 6, 7\)"):
        net(x, c_noise, cond, down_residuals=down)
    with pytest.raises(DifflabError, match=r"mid_residual has shape \(2, 16, 6, 6\), expected \(2, 16, 6, 7\)"):
        net(x, c_noise, cond, mid_residual=mid[..., :6])


@pytest.mark.parametrize("text", [False, True])
def test_trunk_copy_has_the_encoder_and_middle_and_keeps_the_weight_names(text):
    net = random_net(text)
    x, c_noise, cond = inputs(text)
    trunk = net.copy_trunk()
    names = {k.split(".")[0] for k in net.state_dict()}
    decoder = {"up", "upsample", "norm_out", "conv_out"}
    assert {k.split(".")[0] for k in trunk.state_dict()} == names - decoder
    assert names - decoder == {"embed", "conv_in", "down", "downsample", "mid1", "mid_attn", "mid2"} | (
        {"text", "mid_cross_attn"} if text else set())
    with torch.no_grad():
        ours, theirs = net.features(x, c_noise, cond), trunk.features(x, c_noise, cond)
        assert torch.equal(ours.h, theirs.h) and all(map(torch.equal, ours.skips, theirs.skips))
        trunk.conv_in.weight.add_(1)  # a copy: training the control branch leaves the U-Net alone
        assert torch.equal(net.features(x, c_noise, cond).h, ours.h)
