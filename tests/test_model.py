"""A model as named components: one argument (a component file or a .json manifest) loads them all."""

import json

import numpy as np
import pytest
from difflab.commands import ASSETS, BUNDLED_MODEL
from difflab.errors import DifflabError
from difflab.model import load_model
from difflab.train.classifier import load_classifier
from difflab.train.checkpoint import ComponentRef, load_denoiser, save_checkpoint

from test_guidance import run_cli

BUNDLED_CLASSIFIER = ASSETS / "noisy_classifier" / "classifier.safetensors"


def manifest(tmp_path, **parts) -> str:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({name: str(file) for name, file in parts.items()}))
    return str(path)


def test_a_component_file_is_a_model_of_one_denoiser():
    model = load_model(BUNDLED_MODEL)
    assert model.files == {"denoiser": BUNDLED_MODEL}
    assert model.checkpoint.kind == "denoiser" and model.checkpoint.step == 5760


def test_a_manifest_names_the_parts_relative_to_itself(tmp_path):
    (tmp_path / "parts").mkdir()
    for name, source in (("d.safetensors", BUNDLED_MODEL), ("c.safetensors", BUNDLED_CLASSIFIER)):
        (tmp_path / "parts" / name).write_bytes(source.read_bytes())
    model = load_model(manifest(tmp_path, denoiser="parts/d.safetensors", classifier="parts/c.safetensors"))
    assert model.files["classifier"] == tmp_path / "parts" / "c.safetensors"
    assert load_classifier(model.files["classifier"])[1].class_names[0] == "T-shirt/top"


def test_the_manifests_classifier_guides_like_the_flag(tmp_path, capsys):
    common = ["--class", "7", "--classifier-scale", "4", "--steps", "3", "--n", "2"]
    code, _, err = run_cli(capsys, "sample", manifest(tmp_path, denoiser=BUNDLED_MODEL, classifier=BUNDLED_CLASSIFIER),
                           *common, "--out", str(tmp_path / "a.npz"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", str(BUNDLED_MODEL), "--classifier", str(BUNDLED_CLASSIFIER), *common,
                           "--out", str(tmp_path / "b.npz"))
    assert code == 0, err
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert np.array_equal(a["images"], b["images"]) and a["labels"].tolist() == [7, 7]
    code, _, err = run_cli(capsys, "sample", str(BUNDLED_MODEL), *common, "--out", str(tmp_path / "c.npz"))
    assert code == 2 and "--classifier-scale needs --classifier CKPT" in err


@pytest.mark.parametrize("parts, words", [
    ({"classifier": BUNDLED_CLASSIFIER}, 'must name a "denoiser" file'),
    ({"denoiser": BUNDLED_MODEL, "vae": BUNDLED_MODEL}, "unknown part(s) vae; parts are denoiser, classifier"),
    ({"denoiser": BUNDLED_CLASSIFIER}, "holds a classifier, not a denoiser"),
])
def test_bad_manifests_get_one_line(tmp_path, capsys, parts, words):
    code, _, err = run_cli(capsys, "sample", manifest(tmp_path, **parts), "--steps", "2", "--n", "1",
                           "--out", str(tmp_path / "s.png"))
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_a_denoiser_refers_to_its_frozen_components_by_hash(tmp_path):
    frozen = tmp_path / "frozen.safetensors"
    frozen.write_bytes(BUNDLED_CLASSIFIER.read_bytes())
    denoiser, checkpoint = load_denoiser(BUNDLED_MODEL)
    path = tmp_path / "denoiser.safetensors"
    save_checkpoint(path, checkpoint.config, 1, model=denoiser.net,
                    refs={"guide": ComponentRef.to("classifier", frozen)})
    assert load_model(path).checkpoint.refs["guide"].kind == "classifier"
    frozen.write_bytes(BUNDLED_CLASSIFIER.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DifflabError, match="frozen component 'guide' at .* has changed"):
        load_model(path)
