"""The Fashion-MNIST feature network: a small CNN classifier whose 128-d penultimate layer is the space in
which sample sets are compared (the role Inception-v3's pool3 plays for FID on ImageNet-like data)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from difflab.errors import DifflabError
from difflab.images import atomic_write

FORMAT = "difflab-feature-net-1"
FEATURE_NET_PATH = Path(__file__).resolve().parent.parent / "assets" / "feature_net" / "model.safetensors"
IMAGE_SIZE = (28, 28)  # one-channel input, height x width
FEATURE_DIM = 128
NUM_CLASSES = 10


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU, 2x2 max-pool (halves the side, rounding down)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2))


class FeatureNet(nn.Module):
    """[B, 1, 28, 28] in [-1, 1] -> (features [B, 128] after ReLU, class logits [B, 10])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_block(1, 32), conv_block(32, 64), conv_block(64, 128))  # 28 -> 14 -> 7 -> 3
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(128 * 3 * 3, FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.classifier = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.embed(self.conv(x))
        return features, self.classifier(self.dropout(features))


def save_feature_net(net: FeatureNet, path: str | Path, metadata: dict[str, object]) -> None:
    """Weights (float32) and the training record as safetensors metadata, written atomically."""
    tensors = {k: v.detach().float().contiguous() for k, v in net.state_dict().items() if v.is_floating_point()}
    payload = save_bytes(tensors, metadata={"format": FORMAT, "record": json.dumps(metadata)})
    atomic_write(path, lambda f: f.write(payload))


def load_feature_net(path: str | Path = FEATURE_NET_PATH) -> tuple[FeatureNet, str]:
    """The network in eval mode and the first 16 hex digits of its file's SHA-256 (names its feature space)."""
    path = Path(path)
    if not path.is_file():
        raise DifflabError(f"feature network {path} not found; "
                           "train it with 'python -m difflab.eval.train_feature_net'")
    raw = path.read_bytes()
    net = FeatureNet()
    try:
        # num_batches_tracked (an integer counter used only in training) is not stored
        missing, unexpected = net.load_state_dict(load_bytes(raw), strict=False)
    except (SafetensorError, RuntimeError) as err:
        raise DifflabError(f"feature network {path} is damaged or does not fit FeatureNet ({err})") from None
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise DifflabError(f"feature network {path} does not fit FeatureNet "
                           f"(missing {missing}, unexpected {unexpected})")
    return net.eval(), hashlib.sha256(raw).hexdigest()[:16]
