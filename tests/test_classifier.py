"""The noise-aware classifier: network, `difflab train-classifier`, its checkpoint, and guiding samples with it."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from golden_arrays import LOGIT_ATOL, assert_matches_golden
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from test_guidance import run_cli
from test_serve_api import write_checkpoint

from difflab.cli import main
from difflab.commands import BUNDLED_MODEL
from difflab.errors import DifflabError
from difflab.nets.classifier import ClassifierConfig, NoiseAwareClassifier, convert_legacy_classifier
from difflab.nets.unet import UNetConfig
from difflab.train.checkpoint import load_checkpoint
from difflab.train.classifier import load_classifier
from difflab.train.classifier_config import ClassifierTrainConfig

BUNDLED_CLASSIFIER = Path(__file__).resolve().parents[1] / "difflab/assets/noisy_classifier/classifier.safetensors"
GOLDEN = Path(__file__).resolve().parent / "golden"
LEGACY_CLASSIFIER = GOLDEN / "legacy_classifier.safetensors"  # the bundled classifier as first written
TINY = {"channels": 8, "channel_mult": (1, 2), "attention_levels": (1,), "head_dim": 8, "groups": 4}


@pytest.mark.parametrize("pool", ["attention", "mean"])
def test_classifier_gives_logits_for_any_size_and_depends_on_the_timestep(pool):
    net = NoiseAwareClassifier(ClassifierConfig(UNetConfig(**TINY), num_classes=4, pool=pool))
    for p in net.parameters():  # the zero-initialised residual branches would hide the time embedding
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(3, 1, 12, 20)
    assert net(x, torch.tensor([0.0, 5.0, 9.0])).shape == (3, 4)
    assert not torch.allclose(net(x, torch.zeros(3)), net(x, torch.full((3,), 500.0)))


def test_classifier_config_names_bad_fields_and_round_trips():
    with pytest.raises(DifflabError, match="divisible by groups=8"):
        ClassifierConfig(UNetConfig(channels=12))
    with pytest.raises(DifflabError, match="must split into heads of about head_dim=9"):
        ClassifierConfig(UNetConfig(channels=24, head_dim=9))
    with pytest.raises(DifflabError, match="a classifier sees no labels or text"):
        ClassifierConfig(UNetConfig(channels=24, num_classes=10))
    with pytest.raises(DifflabError, match="num_classes must be >= 2"):
        ClassifierConfig(num_classes=1)
    with pytest.raises(DifflabError, match="pool must be attention or mean"):
        ClassifierConfig(pool="max")
    config = ClassifierConfig(UNetConfig(**TINY), num_classes=4, pool="mean")
    assert ClassifierConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config


def test_legacy_classifier_converts_to_the_same_logits():
    """tests/golden/classifier_logits.npy: the bundled classifier's logits from the flat network of
    difflab-classifier-1 files, written before the network became the U-Net's trunk."""
    path = LEGACY_CLASSIFIER
    with safe_open(path, "pt") as f:
        network = json.loads(f.metadata()["config"])["network"]
    weights = {k: v for k, v in load_file(path).items() if not k.startswith(("optim.", "rng."))}
    config, converted = convert_legacy_classifier(network, weights)
    assert config == ClassifierConfig()  # the bundled classifier was trained with the defaults
    net = NoiseAwareClassifier(config)
    net.load_state_dict(converted)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = net.eval()(x, torch.tensor([0.0, 100.0, 500.0, 999.0]))
    assert_matches_golden(logits, np.load(GOLDEN / "classifier_logits.npy"), LOGIT_ATOL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two classes of 16x16 images (bright left half / bright right half), a model with a 100-step schedule, and a
    classifier trained for a few steps on its schedule."""
    root = tmp_path_factory.mktemp("classifier")
    rng = np.random.default_rng(0)
    for name, half in (("left", np.s_[:, :8]), ("right", np.s_[:, 8:])):
        (root / "data" / name).mkdir(parents=True)
        for i in range(8):
            image = rng.integers(0, 60, (16, 16)).astype(np.uint8)
            image[half] += 180
            Image.fromarray(image).save(root / "data" / name / f"{i}.png")
    model = write_checkpoint(root / "model" / "checkpoint.safetensors", timesteps=100)
    out = root / "clf"
    assert main(["train-classifier", "--for-model", str(model), "--data", str(root / "data"), "--steps", "6",
                        "--batch", "4", "--eval-n", "8", "--channels", "8", "--out", str(out)]) == 0
    return model, out / "classifier.safetensors"


def test_train_classifier_writes_a_checkpoint_that_reloads(trained):
    model, path = trained
    classifier, spec = load_classifier(path)
    assert spec.class_names == ("left", "right") and spec.data_shape == (1, 16, 16)
    assert spec.schedule == load_checkpoint(model).config.schedule
    assert spec.network.trunk.channels == 8 and spec.train.steps == 6
    assert not any(p.requires_grad for p in classifier.parameters())
    x, sigma = torch.randn(2, 1, 16, 16), torch.tensor([0.5, 3.0])
    again, _ = load_classifier(path)
    assert torch.equal(classifier(x, sigma), again(x, sigma))


def test_classifier_guides_an_unconditional_model_in_both_forms(trained, tmp_path, capsys):
    model, path = trained
    for form, sampler in (("eps", "ddim"), ("mean", "ddpm")):
        out = tmp_path / f"{form}.npz"
        code, stdout, err = run_cli(capsys, "sample", str(model), "--classifier", str(path), "--class", "1",
                                    "--classifier-scale", "4", "--classifier-form", form, "--sampler", sampler,
                                    "--steps", "3", "--n", "2", "--out", str(out))
        assert code == 0, err
        assert np.load(out)["labels"].tolist() == [1, 1]


@pytest.mark.parametrize("bundled, argv, words", [
    (True, ["--class", "1"], "--classifier was trained for schedule"),
    (False, [], "classifier guidance needs a class label for every sample: give --class K"),
    (False, ["--class", "2"], "--class must lie in 0..1 (left, right)"),
    (False, ["--class", "1", "--classifier-form", "mean"], "needs --sampler ddpm"),
])
def test_classifier_misuse_gives_one_line(trained, tmp_path, capsys, bundled, argv, words):
    model, path = trained
    code, _, err = run_cli(capsys, "sample", str(BUNDLED_MODEL if bundled else model), *argv, "--classifier", str(path),
                           "--steps", "2", "--n", "2", "--out", str(tmp_path / "s.png"))
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def bundled_logits(classifier) -> torch.Tensor:
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return classifier.net(x, torch.tensor([0.0, 100.0, 500.0, 999.0]))


def test_bundled_classifier_is_a_component_with_the_logits_it_always_had():
    classifier, spec = load_classifier(BUNDLED_CLASSIFIER)
    assert spec.network == ClassifierConfig() and spec.class_names[9] == "Ankle boot"
    assert_matches_golden(bundled_logits(classifier), np.load(GOLDEN / "classifier_logits.npy"), LOGIT_ATOL)


def test_an_old_classifier_file_names_its_conversion_and_converts(tmp_path, capsys):
    with pytest.raises(DifflabError, match=r"convert it once with `difflab convert-classifier .*legacy_classifier"):
        load_classifier(LEGACY_CLASSIFIER)
    code, _, err = run_cli(capsys, "sample", "--classifier", str(LEGACY_CLASSIFIER), "--class", "1", "--steps", "2",
                           "--n", "1", "--out", str(tmp_path / "s.png"))
    assert code == 2 and "difflab convert-classifier" in err and len(err.strip().splitlines()) == 1, err
    new = tmp_path / "new.safetensors"
    code, _, err = run_cli(capsys, "convert-classifier", str(LEGACY_CLASSIFIER), str(new))
    assert code == 0, err
    classifier, spec = load_classifier(new)
    assert_matches_golden(bundled_logits(classifier), np.load(GOLDEN / "classifier_logits.npy"), LOGIT_ATOL)
    code, _, err = run_cli(capsys, "convert-classifier", str(new), str(tmp_path / "again.safetensors"))
    assert code == 2 and "is not a classifier of the old format" in err


def test_load_classifier_refuses_damaged_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DifflabError, match="damaged or not a safetensors file"):
        load_classifier(bad)


@pytest.mark.parametrize("where", ["after_checkpoint", "mid_step"])
def test_interrupted_classifier_training_resumes_exactly(trained, tmp_path, monkeypatch, capsys, where):
    import difflab.train.classifier as training
    import difflab.train.loop as loop

    model, _ = trained
    data = str(model.parents[1] / "data")
    cfg = ClassifierTrainConfig(data=data, steps=6, batch=4, eval_n=8, checkpoint_every=3)
    schedule = load_checkpoint(model).config.schedule
    network = ClassifierConfig(replace(ClassifierConfig().trunk, channels=8))
    straight = training.train_classifier(cfg, schedule, tmp_path / "a", network=network, progress=False)
    save, draw_noise, draws = loop.save_checkpoint, training.draw_noise, []

    def save_then_stop(path, config, step, **kwargs):
        save(path, config, step, **kwargs)
        if step == 3:
            raise KeyboardInterrupt  # as if Ctrl-C came right after the periodic checkpoint

    def draw_then_stop(*args, **kwargs):
        noise = draw_noise(*args, **kwargs)
        draws.append(1)
        if len(draws) == 5:
            raise KeyboardInterrupt  # within step 5, after its noise was drawn: the save must roll the stream back
        return noise

    if where == "after_checkpoint":
        monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    else:
        monkeypatch.setattr(training, "draw_noise", draw_then_stop)
    with pytest.raises(KeyboardInterrupt):
        training.train_classifier(cfg, schedule, tmp_path / "b", network=network, progress=False)
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "train-classifier", "--resume", "--out", str(tmp_path / "b"))
    assert code == 0, err
    (a, _), (b, _) = load_classifier(straight.checkpoint), load_classifier(tmp_path / "b" / "classifier.safetensors")
    for (name, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(x, y), name
    code, _, err = run_cli(capsys, "train-classifier", "--resume", "--out", str(tmp_path / "b"))
    assert code == 2 and "holds a finished classifier (step 6); nothing to resume" in err
