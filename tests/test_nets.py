import pytest
import torch

from difflab.conditioning import NULL_LABEL, Condition
from difflab.errors import DifflabError
from difflab.nets import build_network, network_config, network_spec


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 32), (3, 28)])
def test_unet_shapes(tiny_unet_spec, channels, size):
    spec = {**tiny_unet_spec, "in_channels": channels, "channel_mult": [1, 2, 2]}
    net = build_network(network_config(spec))
    x = torch.randn(2, channels, size, size)
    assert net(x, torch.tensor([0.0, 999.0])).shape == x.shape


def test_unet_output_starts_at_zero_and_depends_on_time_and_class(tiny_unet_spec):
    net = build_network(network_config({**tiny_unet_spec, "num_classes": 10}))
    x = torch.randn(2, 1, 28, 28)
    assert net(x, torch.zeros(2)).abs().max() == 0  # zero-initialised output conv
    for module in net.modules():  # undo the zero initialisation of the residual branches
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Embedding)) and not module.weight.any():
            torch.nn.init.normal_(module.weight, std=0.1)
    a = net(x, torch.zeros(2), Condition(torch.tensor([1, 2])))
    assert not torch.allclose(a, net(x, torch.full((2,), 500.0), Condition(torch.tensor([1, 2]))))
    assert not torch.allclose(a, net(x, torch.zeros(2), Condition(torch.tensor([3, 4]))))
    null = net(x, torch.zeros(2))  # no labels: the null class
    assert torch.equal(null, net(x, torch.zeros(2), Condition(torch.full((2,), NULL_LABEL))))


def test_config_round_trip_and_errors(tiny_unet_spec):
    config = network_config(tiny_unet_spec)
    assert network_config(network_spec(config)) == config
    with pytest.raises(DifflabError, match="unknown field"):
        network_config({**tiny_unet_spec, "widht": 3})
    with pytest.raises(DifflabError, match="network.kind"):
        network_config({"kind": "transformer"})
    with pytest.raises(DifflabError, match="divisible"):
        network_config({**tiny_unet_spec, "channels": 6})


def test_mlp_shapes():
    net = build_network(network_config({"kind": "mlp", "dim": 2, "hidden": 32, "depth": 2}))
    assert net(torch.randn(5, 2), torch.rand(5) * 999).shape == (5, 2)
