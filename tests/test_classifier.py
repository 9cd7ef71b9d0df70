"""The noise-aware classifier: network, `difflab train-classifier`, its checkpoint, and guiding samples with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_guidance import run_cli
from test_serve_api import write_checkpoint

from difflab.cli import main
from difflab.commands import BUNDLED_MODEL
from difflab.errors import DifflabError
from difflab.nets.classifier import ClassifierConfig, NoiseAwareClassifier
from difflab.train.checkpoint import load_checkpoint
from difflab.train.classifier import load_classifier

TINY = {"channels": 8, "channel_mult": (1, 2), "attention_levels": (1,), "head_dim": 8, "groups": 4}


@pytest.mark.parametrize("pool", ["attention", "mean"])
def test_classifier_gives_logits_for_any_size_and_depends_on_the_timestep(pool):
    net = NoiseAwareClassifier(ClassifierConfig(num_classes=4, pool=pool, **TINY))
    for p in net.parameters():  # the zero-initialised residual branches would hide the time embedding
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(3, 1, 12, 20)
    assert net(x, torch.tensor([0.0, 5.0, 9.0])).shape == (3, 4)
    assert not torch.allclose(net(x, torch.zeros(3)), net(x, torch.full((3,), 500.0)))


def test_classifier_config_names_bad_fields():
    with pytest.raises(DifflabError, match="divisible by groups=8"):
        ClassifierConfig(channels=12)
    with pytest.raises(DifflabError, match="pool must be attention or mean"):
        ClassifierConfig(pool="max")


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
    assert spec.network.channels == 8 and spec.train.steps == 6
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


def test_load_classifier_refuses_damaged_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DifflabError, match="damaged or not a safetensors file"):
        load_classifier(bad)


@pytest.mark.parametrize("where", ["after_checkpoint", "mid_step"])
def test_interrupted_classifier_training_resumes_exactly(trained, tmp_path, monkeypatch, capsys, where):
    import difflab.train.classifier as training

    model, _ = trained
    data = str(model.parents[1] / "data")
    cfg = training.ClassifierTrainConfig(data=data, steps=6, batch=4, eval_n=8, checkpoint_every=3)
    schedule = load_checkpoint(model).config.schedule
    network = ClassifierConfig(channels=8)
    straight = training.train_classifier(cfg, schedule, tmp_path / "a", network=network, progress=False)
    save, draw_noise, draws = training.save_classifier, training.draw_noise, []

    def save_then_stop(path, net, spec, step, accuracy=None, optimizer=None, generator=None):
        save(path, net, spec, step, accuracy, optimizer, generator)
        if step == 3:
            raise KeyboardInterrupt  # as if Ctrl-C came right after the periodic checkpoint

    def draw_then_stop(*args, **kwargs):
        noise = draw_noise(*args, **kwargs)
        draws.append(1)
        if len(draws) == 5:
            raise KeyboardInterrupt  # within step 5, after its noise was drawn: the save must roll the stream back
        return noise

    if where == "after_checkpoint":
        monkeypatch.setattr(training, "save_classifier", save_then_stop)
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
