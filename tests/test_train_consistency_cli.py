"""`difflab train-consistency` and its other spelling, `difflab train --objective consistency`."""

import json
import os

from adapter_models import write_images
from difflab.cli import build_parser, expand_aliases, main
from difflab.commands.train import RECIPES
from difflab.train.checkpoint import load_checkpoint


def test_train_objective_consistency_is_train_consistency(tmp_path, tiny_unet_spec, capsys, monkeypatch):
    monkeypatch.setattr("difflab.train.loop.plot_loss", lambda *args: None)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"network": tiny_unet_spec,
                                  "train": {"data": str(write_images(tmp_path / "images", 4))}}))
    argv = ["--config", str(config), "--steps", "2", "--batch", "4", "--out", str(tmp_path / "ct")]
    assert expand_aliases(["train", "--objective", "consistency", *argv]) == ["train-consistency", *argv]
    assert expand_aliases(["train", *argv[:2], "--objective=consistency"]) == ["train-consistency", *argv[:2]]
    assert main(["train", "--objective", "consistency", *argv]) == 0
    student = load_checkpoint(tmp_path / "ct" / "student.safetensors")
    assert student.step == 2 and student.config.precond.kind == "consistency"
    assert student.config.precond.inner.kind == "vp" and student.config.consistency_levels is not None
    assert main(["train", "--objective", "consistency", "--config", str(RECIPES / "toy.json"), "--steps", "1"]) == 2
    assert "consistency training takes images (a U-Net or DiT config), not a mlp network" in capsys.readouterr().err


def test_train_consistency_finds_its_default_config_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train-consistency"])
    assert os.path.isfile(args.config) and args.config.endswith("fashion_mnist_edm.json")
