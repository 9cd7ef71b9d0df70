import pytest
import torch

from difflab.nets import build_network
from difflab.train.checkpoint import save_checkpoint
from difflab.train.config import ExperimentConfig


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests' models are tiny: one thread beats two, which mostly wait on each other on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


TINY_UNET = {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_levels": [1],
             "head_dim": 8, "groups": 4}


@pytest.fixture
def tiny_unet_spec():
    return dict(TINY_UNET)


@pytest.fixture
def random_teacher(tmp_path, tiny_unet_spec, monkeypatch):
    """A tiny VP teacher with every weight drawn at random (a zero output layer would give the students zero loss);
    the runs skip their loss plots."""
    monkeypatch.setattr("difflab.train.loop.plot_loss", lambda *args: None)
    config = ExperimentConfig.from_dict({"network": tiny_unet_spec, "train": {"batch": 4}})
    net = build_network(config.network)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save_checkpoint(tmp_path / "teacher.safetensors", config, 0, model=net)
    return tmp_path / "teacher.safetensors"
