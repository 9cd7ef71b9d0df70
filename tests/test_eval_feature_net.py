"""The shipped feature net, feature extraction and its cache, and `difflab eval` end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.cli import main
from difflab.data.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist
from difflab.eval import features as features_module
from difflab.eval.feature_net import FEATURE_NET_PATH, load_feature_net
from difflab.eval.features import extract, reference_features
from difflab.eval.frechet import frechet_distance_of
from difflab.nets import build_network
from difflab.train.checkpoint import save_checkpoint
from difflab.train.config import ExperimentConfig

needs_data = pytest.mark.skipif(not (DEFAULT_ROOT / "t10k-images-idx3-ubyte").exists()
                                and not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").exists(),
                                reason="Fashion-MNIST IDX files not installed")


@pytest.fixture(scope="module")
def test_images():
    data = load_fashion_mnist(None, "test")
    return data.data[:1000], data.labels[:1000]


def test_shipped_weights_are_small_safetensors_with_their_record():
    assert FEATURE_NET_PATH.stat().st_size < 2 * 2**20
    from safetensors import safe_open

    with safe_open(str(FEATURE_NET_PATH), "pt") as f:
        record = json.loads(f.metadata()["record"])
    assert record["test_accuracy"] >= 0.9


@needs_data
def test_shipped_net_classifies_test_images(test_images):
    net, net_hash = load_feature_net()
    images, labels = test_images
    out = extract(net, images[:500], batch=128)
    assert out.features.shape == (500, 128) and out.probs.shape == (500, 10) and len(net_hash) == 16
    assert torch.allclose(out.probs.sum(1), torch.ones(500), atol=1e-5)
    assert (out.probs.argmax(1) == labels[:500]).double().mean() >= 0.9
    assert torch.allclose(extract(net, images[:20], batch=3).features, out.features[:20], atol=1e-5)


@needs_data
def test_fd_in_feature_space_grows_with_pixel_noise(test_images):
    net, _ = load_feature_net()
    images, _ = test_images
    reference = extract(net, images[:500]).features
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(images[500:].shape, generator=generator)
    fd = []
    for std in (0.0, 0.1, 0.2, 0.4):  # std in units of the [-1, 1] range
        noisy = ((images[500:].float() / 127.5 - 1 + std * noise).clamp(-1, 1) + 1) * 127.5
        fd.append(frechet_distance_of(extract(net, noisy.round().to(torch.uint8)).features, reference))
    assert all(a < b for a, b in zip(fd, fd[1:])), fd


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def small_test_split(tmp_path, monkeypatch, test_images):
    """A Fashion-MNIST folder whose test split is 40 real test images, and an empty feature cache."""
    images, labels = test_images
    root = tmp_path / "fashion"
    root.mkdir()
    write_idx(root / "t10k-images-idx3-ubyte", images[:40, 0].numpy())
    write_idx(root / "t10k-labels-idx1-ubyte", labels[:40].numpy())
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    reference_features.cache_clear()
    yield root
    reference_features.cache_clear()


@needs_data
def test_reference_features_are_cached_in_a_validated_file(small_test_split):
    features, labels, net_hash = reference_features(str(small_test_split))
    (cached,) = (Path(features_module.cache_dir())).glob(f"fashion-mnist-test-{net_hash}-*.safetensors")
    assert features_module._read_cache(cached, 40).features.equal(features.features)
    assert features_module._read_cache(cached, 41) is None  # another size is not this set
    cached.write_bytes(cached.read_bytes()[:100])  # a damaged cache is recomputed and rewritten
    assert features_module._read_cache(cached, 40) is None
    reference_features.cache_clear()
    again, _, _ = reference_features(str(small_test_split))
    assert torch.allclose(again.features, features.features) and features_module._read_cache(cached, 40) is not None


@needs_data
def test_cli_evaluates_an_image_archive(small_test_split, tmp_path, capsys, test_images):
    images, labels = test_images
    path = tmp_path / "samples.npz"
    np.savez(path, images=images[100:160, 0].numpy(), labels=labels[100:160].numpy())
    assert main(["eval", str(path), "--data-root", str(small_test_split), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 60 and metrics["accuracy"] >= 0.85 and metrics["class_coverage"] > 0.5
    assert {"fd", "kid", "kid_std", "precision", "recall"} <= set(metrics)
    assert main(["eval", str(path), "--data-root", str(small_test_split), "--n", "20"]) == 0
    assert "samples" in capsys.readouterr().out


def test_cli_samples_a_toy_checkpoint_and_reads_back_the_same_numbers(tmp_path, capsys):
    config = ExperimentConfig.from_dict({"network": {"kind": "mlp", "hidden": 16, "depth": 1},
                                         "train": {"data": "toy:moons"}, "data_shape": [2]})
    save_checkpoint(tmp_path / "toy.safetensors", config, 0, model=build_network(config.network))
    saved = tmp_path / "points.npz"
    assert main(["eval", str(tmp_path / "toy.safetensors"), "--n", "200", "--steps", "3", "--json",
                 "--save", str(saved)]) == 0
    from_checkpoint = json.loads(capsys.readouterr().out)
    assert from_checkpoint["n"] == 200 and from_checkpoint["sampler"] == "ddim" and len(from_checkpoint["ks"]) == 2
    assert main(["eval", str(saved), "--data", "toy:moons", "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_file["swd"] == pytest.approx(from_checkpoint["swd"], rel=1e-5)
    assert from_file["energy"] == pytest.approx(from_checkpoint["energy"], rel=1e-4)
    assert main(["eval", str(tmp_path / "toy.safetensors"), "--n", "200", "--sigmas", "5,1,0.5", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    assert (given["steps"], given["sigmas"]) == (3, "5,1,0.5") and "sigmas" not in from_checkpoint


@needs_data
def test_cli_samples_a_class_conditional_image_checkpoint(small_test_split, tmp_path, capsys, tiny_unet_spec):
    names = [f"class {i}" for i in range(10)]
    config = ExperimentConfig.from_dict({"network": {**tiny_unet_spec, "num_classes": 10}, "class_names": names})
    save_checkpoint(tmp_path / "unet.safetensors", config, 0, model=build_network(config.network))
    saved = tmp_path / "images.npz"
    assert main(["eval", str(tmp_path / "unet.safetensors"), "--n", "20", "--steps", "2", "--batch", "8",
                 "--data-root", str(small_test_split), "--save", str(saved), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 20 and 0 <= metrics["accuracy"] <= 1 and metrics["steps"] == 2
    with np.load(saved) as archive:  # labels are class-balanced: sample i asks for class i mod 10
        assert archive["images"].shape == (20, 28, 28) and archive["labels"].tolist() == list(range(10)) * 2
