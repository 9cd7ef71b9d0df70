"""A super-resolution model as hr_upscaler: the hires fix's on the CLI (--hires-upscaler FILE) and on the server
(--upscaler-dir; GET /sdapi/v1/upscalers, txt2img enable_hr), and the server's upscaler to another width x height
(txt2img, img2img), all on the pipelines' one path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cascade_models import tiny_config, tiny_denoiser, write_tiny
from fastapi.testclient import TestClient
from test_hires import pixels
from test_serve_api import write_checkpoint

from difflab.cli import main
from difflab.images import to_uint8
from difflab.model import load_model
from difflab.pipelines.cascade import SuperResolution
from difflab.pipelines.hires import MODEL_UPSCALER, Hires, run_hires
from difflab.pipelines.request import Request, plan_request
from difflab.serve.app import create_app
from difflab.serve.model import load_served_model
from difflab.serve.upscalers import UpscalerCatalog

SR_CONFIG = tiny_config(32, low_res=16, augmentation=0.5, classes=None)  # 16x16 -> 32x32, levels up to 0.5


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 16x16 base model, and in the upscaler folder a 16 -> 32 super-resolution model beside a plain model."""
    root = tmp_path_factory.mktemp("upscalers")
    base = write_checkpoint(root / "base.safetensors", randomize=True)
    (root / "sr").mkdir()
    write_tiny(root / "sr" / "sr16.safetensors", SR_CONFIG, 5)
    write_checkpoint(root / "sr" / "plain.safetensors")  # takes no low-resolution image: not an upscaler
    return base, root / "sr"


@pytest.fixture(scope="module")
def client(files):
    base, folder = files
    model = load_served_model(base)
    with TestClient(create_app(model, upscalers=UpscalerCatalog(folder))) as client:
        yield client


def expected_hires(base, noise_level: float, **hires) -> np.ndarray:
    """The pipelines' hires fix with the super-resolution stage, as the CLI's --hires-upscaler FILE builds it."""
    model = load_model(base)
    request = Request(n=2, seed=3, sampler="Euler", steps=4)
    plan = plan_request(request, model.denoiser, model.checkpoint.config)
    sr = SuperResolution(plan_request(request, tiny_denoiser(SR_CONFIG, 5), SR_CONFIG), SR_CONFIG, noise_level)
    return to_uint8(run_hires(plan, model.checkpoint.config, Hires(upscaler=MODEL_UPSCALER, **hires),
                              upscaler=sr).samples)


def post(client, **body):
    return client.post("/sdapi/v1/txt2img", json={"steps": 4, "seed": 3, "sampler_name": "Euler", "batch_size": 2,
                                                  "enable_hr": True, "hr_scale": 2, **body})


def test_upscalers_lists_super_resolution_models_as_the_web_ui(client, files):
    listed = client.get("/sdapi/v1/upscalers").json()
    assert [item["name"] for item in listed][-1] == "sr16"  # after the resize methods; "plain" is not one
    assert listed[-1] == {"name": "sr16", "model_name": "difflab super-resolution",
                          "model_path": str((files[1] / "sr16.safetensors").resolve()), "model_url": None, "scale": 2.0}


@pytest.mark.parametrize("noise_level", [None, 0.25])
def test_txt2img_hires_with_a_super_resolution_upscaler(client, files, noise_level):
    body = {} if noise_level is None else {"difflab_hr_noise_level": noise_level}
    response = post(client, hr_upscaler="SR16", denoising_strength=0.5, hr_second_pass_steps=3, **body)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert (info["width"], info["height"], info["warnings"]) == (32, 32, [])
    text = "Denoising strength: 0.5, Hires upscale: 2, Hires steps: 3, Hires upscaler: sr16"  # its listed name
    assert info["infotexts"][0].endswith(text + (", Hires noise level: 0.25" if noise_level else ""))
    expected = expected_hires(files[0], noise_level or 0.0, scale=2, strength=0.5, steps=3)
    assert np.array_equal(pixels(response.json()), expected)


def test_sample_hires_upscaler_file_runs_the_same_path(tmp_path, files):
    base, folder = files
    out = tmp_path / "x.npz"
    assert main(["sample", str(base), "--n", "2", "--seed", "3", "--sampler", "Euler", "--steps", "4",
                 "--hires-scale", "2", "--hires-strength", "0", "--hires-upscaler", str(folder / "sr16.safetensors"),
                 "--noise-level", "0.25", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out)["images"], expected_hires(base, 0.25, scale=2, strength=0.0))


@pytest.mark.parametrize("body, field, words", [
    ({"hr_upscaler": "nothing"}, "hr_upscaler", ("must be one of Latent, Latent (antialiased), Latent (bicubic), "
                                                 "Latent (bicubic antialiased), Latent (nearest), Latent "
                                                 "(nearest-exact), Nearest, Bilinear, sr16")),
    ({"hr_upscaler": "plain"}, "hr_upscaler", "must be one of"),
    ({"hr_upscaler": "sr16", "hr_scale": 3}, "hr_upscaler", ("hr_upscaler sr16 upscales 16x16 images (1 channel(s)) "
                                                             "to 32x32; this request upscales 16x16 (1 channel(s)) "
                                                             "to 48x48")),
    ({"hr_upscaler": "sr16", "hr_resize_x": 32, "hr_resize_y": 24}, "hr_upscaler", "to 32x24"),
    ({"hr_upscaler": "sr16", "difflab_hr_noise_level": 0.9}, "difflab_hr_noise_level", "[0, 0.5]"),
    ({"hr_upscaler": "Latent", "difflab_hr_noise_level": 0.1}, "difflab_hr_noise_level", "goes with an hr_upscaler"),
    ({"enable_hr": False, "difflab_hr_noise_level": 0.1}, "difflab_hr_noise_level", "that is a super-resolution"),
    ({"enable_hr": False, "width": 48, "hr_upscaler": "sr16"}, "hr_upscaler", "upscales 16x16 (1 channel(s)) to 48x16"),
])
def test_a_super_resolution_upscaler_that_does_not_fit_is_refused(client, body, field, words):
    response = post(client, **body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert words in answer["detail"] and [e["field"] for e in answer["errors"]] == [field], answer



def test_another_size_by_a_super_resolution_upscaler_batch_by_batch(client, files):
    response = client.post("/sdapi/v1/txt2img", json={"steps": 4, "seed": 3, "sampler_name": "Euler", "batch_size": 1,
                                                      "n_iter": 2, "width": 32, "height": 32, "hr_upscaler": "sr16",
                                                      "difflab_hr_noise_level": 0.25})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert (info["width"], info["size_by"], info["upscaler"], info["warnings"]) == (32, "upscaler", "sr16", [])
    assert "Upscaled from: 16x16, Upscaler: sr16, Upscaler noise level: 0.25" in info["infotexts"][1]
    model = load_model(files[0])  # the two batches of one image each are the one run of two images
    request = Request(n=2, seed=3, sampler="Euler", steps=4)
    low_res = plan_request(request, model.denoiser, model.checkpoint.config).sample()
    sr = SuperResolution(plan_request(request, tiny_denoiser(SR_CONFIG, 5), SR_CONFIG), SR_CONFIG, 0.25)
    assert np.array_equal(pixels(response.json()), to_uint8(sr.run(low_res)))


def test_img2img_upscales_its_edits_by_a_super_resolution_upscaler(client):
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(buffer, format="PNG")
    init = base64.b64encode(buffer.getvalue()).decode()
    body = {"init_images": [init], "steps": 4, "denoising_strength": 0.5, "width": 32, "height": 32}
    upscaled = client.post("/sdapi/v1/img2img", json={**body, "hr_upscaler": "sr16"})
    assert upscaled.status_code == 200, upscaled.text
    assert "Upscaler: sr16" in json.loads(upscaled.json()["info"])["infotexts"][0]
    resized = client.post("/sdapi/v1/img2img", json={**body, "hr_upscaler": "Nearest"})
    assert pixels(upscaled.json()).shape == pixels(resized.json()).shape == (1, 32, 32)
    assert not np.array_equal(pixels(upscaled.json()), pixels(resized.json()))
    refused = client.post("/sdapi/v1/img2img", json={**body, "width": 48, "height": 48, "hr_upscaler": "sr16"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "hr_upscaler"
