import pytest
import torch


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
