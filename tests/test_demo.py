"""The README's main job: `difflab demo` on the bundled model, and with a (very short) training budget."""

from PIL import Image

from difflab.cli import main
from difflab.commands import BUNDLED_MODEL
from difflab.train.checkpoint import load_checkpoint


def test_bundled_model_is_self_describing():
    checkpoint = load_checkpoint(BUNDLED_MODEL)
    assert checkpoint.config.data_shape == (1, 28, 28) and checkpoint.step > 0
    assert BUNDLED_MODEL.with_name("loss.png").is_file() and BUNDLED_MODEL.with_name("README.md").is_file()


def test_demo_samples_from_the_bundled_model(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"samples:    {tmp_path / 'samples.png'}" in out and str(BUNDLED_MODEL) in out
    image = Image.open(tmp_path / "samples.png")
    assert image.size == (8 * 30 + 2, 8 * 30 + 2)  # 8 x 8 tiles of 28 px with 2 px gaps


def test_demo_with_minutes_trains_first(tmp_path, capsys):
    assert main(["demo", "--minutes", "0.03", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training a fresh Fashion-MNIST model" in out
    step = load_checkpoint(tmp_path / "checkpoint.safetensors").step
    assert step >= 1 and f"(step {step})" in out
    assert (tmp_path / "loss.png").is_file()
    assert (tmp_path / "samples" / f"step_{step:07d}.png").is_file()
