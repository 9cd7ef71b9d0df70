"""POST /sdapi/v1/img2img: img2img and inpainting in the web UI's fields, validated like txt2img, answered in its
shape."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_serve_api import CLASSES, write_checkpoint

from difflab.serve.app import create_app
from difflab.serve.model import load_served_model


def png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pixels(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


INIT = np.tile(np.arange(0, 256, 16, dtype=np.uint8)[None], (16, 1))  # a 16x16 grey ramp
MASK = np.zeros((16, 16), np.uint8)
MASK[:, 8:] = 255  # the right half is repainted


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("class") / "checkpoint.safetensors", CLASSES, randomize=True)
    with TestClient(create_app(load_served_model(path))) as client:
        yield client


def img2img(client, **body):
    return client.post("/sdapi/v1/img2img", json={"init_images": [png(INIT)], "steps": 4, "seed": 3, **body})


def test_img2img_answers_in_the_web_uis_shape(client):
    response = img2img(client, denoising_strength=0.5, prompt="Bag", batch_size=2)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"images", "parameters", "info"} and len(answer["images"]) == 2
    info = json.loads(answer["info"])
    assert info["denoising_strength"] == 0.5 and info["all_seeds"] == [3, 4]
    assert "Denoising strength: 0.5" in info["infotexts"][0]
    assert answer["parameters"]["init_images"] is None and answer["parameters"]["mask"] is None
    assert pixels(answer["images"][0]).shape == (16, 16)
    unchanged = img2img(client, denoising_strength=0)
    assert np.array_equal(pixels(unchanged.json()["images"][0]), INIT)  # strength 0 returns the input


def test_include_init_images_echoes_the_inputs(client):
    answer = img2img(client, denoising_strength=0.3, include_init_images=True, mask=png(MASK)).json()
    assert answer["parameters"]["init_images"] == [png(INIT)] and answer["parameters"]["mask"] == png(MASK)


@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_inpainting_keeps_the_unmasked_region_pixel_for_pixel(client, method):
    response = img2img(client, mask=png(MASK), denoising_strength=1, mask_blur=1, inpainting_fill=1,
                       difflab_inpaint_method=method, difflab_jump_length=2, difflab_jump_n=2)
    assert response.status_code == 200, response.text
    image = pixels(response.json()["images"][0])
    # mask_blur 1 softens the border by about 4 pixels (2 int(4 + 0.5) + 1 taps); the left 4 columns are untouched
    assert np.array_equal(image[:, :4], INIT[:, :4]) and not np.array_equal(image[:, 8:], INIT[:, 8:])
    inverted = img2img(client, mask=png(MASK), denoising_strength=1, mask_blur=0, inpainting_mask_invert=1)
    assert np.array_equal(pixels(inverted.json()["images"][0])[:, 8:], INIT[:, 8:])
    info = json.loads(response.json()["info"])
    assert "Mask blur: 1" in info["infotexts"][0] and any("inpaint_full_res" in w for w in info["warnings"])


def test_fix_steps_runs_exactly_the_steps_asked_for(client):
    default = json.loads(img2img(client, denoising_strength=0.5, steps=8).json()["info"])
    exact = json.loads(img2img(client, denoising_strength=0.5, steps=8,
                               override_settings={"img2img_fix_steps": True}).json()["info"])
    assert default["img2img_fix_steps"] is False and exact["img2img_fix_steps"] is True
    assert not any("img2img_fix_steps" in w for w in exact["warnings"])


def test_other_sizes_are_resized_by_resize_mode(client):
    wide = np.tile(np.arange(0, 256, 8, dtype=np.uint8)[None], (16, 1))  # 32x16
    for mode in range(4):
        response = img2img(client, init_images=[png(wide)], resize_mode=mode, denoising_strength=0)
        assert response.status_code == 200 and pixels(response.json()["images"][0]).shape == (16, 16)
    crop = pixels(img2img(client, init_images=[png(wide)], resize_mode=1, denoising_strength=0).json()["images"][0])
    assert abs(int(crop[0, 0]) - 64) <= 8  # the centre half of the ramp (values 64..184), not all of it


@pytest.mark.parametrize("body, field, message", [
    ({"init_images": ["not base64!"]}, "init_images.0", "must be a base64-encoded image"),
    ({"init_images": [base64.b64encode(b"not an image").decode()]}, "init_images.0", "base64-encoded image"),
    ({"mask": "%%%"}, "mask", "must be a base64-encoded image"),
    ({"init_images": []}, "init_images", "at least one"),
    ({"init_images": [png(INIT)] * 3, "batch_size": 2}, "init_images", "1 image or batch_size = 2"),
    ({"denoising_strength": 1.5}, "denoising_strength", "0..1"),
    ({"resize_mode": 4}, "resize_mode", "0..3"),
    ({"mask_blur": -1}, "mask_blur", "0..64"),
    ({"mask_blur_x": 65}, "mask_blur_x", "0..64"),
    ({"mask_blur_y": "a"}, "mask_blur_y", "an integer"),
    ({"inpainting_fill": 4}, "inpainting_fill", "0..3"),
    ({"inpainting_mask_invert": 2}, "inpainting_mask_invert", "0..1"),
    ({"include_init_images": "maybe"}, "include_init_images", "true or false"),
    ({"difflab_inpaint_method": "blend"}, "difflab_inpaint_method", "'replace' or 'repaint'"),
    ({"difflab_jump_n": 0}, "difflab_jump_n", "1..100"),
    ({"mask": png(np.zeros((1, 2049), np.uint8))}, "mask", "at most 2048 pixels a side"),
    ({"init_images": [png((np.zeros((16, 16, 3)) + [0, 90, 0]).astype(np.uint8))]}, "init_images.0", "colour image"),
    ({"difflab_size_by": "model", "width": 32}, "difflab_size_by", "model's size"),
])
def test_every_img2img_field_is_validated(client, body, field, message):
    response = img2img(client, **body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert errors[0]["field"] == field and message in errors[0]["message"], errors
