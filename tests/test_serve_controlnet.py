"""The sd-webui-controlnet API: alwayson_scripts.controlnet on txt2img, /controlnet/model_list, /module_list, /detect,
422s naming the field; and the page's ControlNet panel in headless chromium."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_controlnet import CLASSES, trained_like, write_base
from test_serve_live import browser_page, serving

from difflab.nets.controlnet import ControlNet
from difflab.serve.app import create_app
from difflab.serve.controlnet import ControlNetCatalog
from difflab.serve.model import load_served_model
from difflab.train.checkpoint import ComponentRef, load_denoiser, save_checkpoint
from difflab.train.controlnet import ControlNetSpec


def write_controlnet(folder: Path, base_path: Path) -> Path:
    net = trained_like(ControlNet.from_unet(load_denoiser(base_path)[0].net, "silhouette"))
    path = folder / "sil" / "controlnet.safetensors"
    path.parent.mkdir(parents=True)
    save_checkpoint(path, ControlNetSpec(net.config, (1, 16, 16)), 10, kind="controlnet", model=net,
                    refs={"base": ComponentRef.to("denoiser", base_path)})
    return path


def disc_png(size=64) -> str:
    yy, xx = np.mgrid[:size, :size]
    image = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pixels(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cn")
    base = write_base(folder / "base.safetensors")
    write_controlnet(folder / "controlnets", base)
    return folder, base


@pytest.fixture(scope="module")
def client(setup):
    folder, base = setup
    app = create_app(load_served_model(base), controlnets=ControlNetCatalog([folder / "controlnets"]))
    with TestClient(app) as client:
        yield client


def txt2img(client, units=None, **fields):
    body = {"prompt": "Coat", "steps": 3, "seed": 7, "cfg_scale": 2, "batch_size": 2, **fields}
    if units is not None:
        body["alwayson_scripts"] = {"controlnet": {"args": units}}
    return client.post("/sdapi/v1/txt2img", json=body)


def unit(client, **fields):
    model = client.get("/controlnet/model_list").json()["model_list"][0]
    return {"image": disc_png(), "module": "silhouette", "model": model, "weight": 1.0, **fields}


def test_lists_in_the_extensions_shapes(client):
    models = client.get("/controlnet/model_list").json()
    assert len(models["model_list"]) == 1 and models["model_list"][0].startswith("sil [")
    modules = client.get("/controlnet/module_list").json()
    assert modules["module_list"] == ["none", "canny", "sobel", "silhouette", "lowres", "scribble"]
    assert set(modules["module_detail"]) == set(modules["module_list"])
    assert client.get("/controlnet/version").json() == {"version": 2}


def test_detect_returns_the_preprocessors_map_at_the_models_size(client):
    answer = client.post("/controlnet/detect", json={"controlnet_module": "silhouette",
                                                     "controlnet_input_images": [disc_png()]})
    assert answer.status_code == 200 and answer.json()["info"] == "Success"
    (image,) = answer.json()["images"]
    silhouette = pixels(image)
    assert silhouette.shape == (16, 16) and set(np.unique(silhouette)) == {0, 255}
    assert silhouette[8, 8] == 255 and silhouette[0, 0] == 0
    bad = client.post("/controlnet/detect", json={"controlnet_module": "depth", "controlnet_input_images": [disc_png()]})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "controlnet_module"
    empty = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": []})
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "controlnet_input_images"


def test_txt2img_round_trip_with_a_controlnet_unit(client):
    plain = txt2img(client)
    controlled = txt2img(client, [unit(client)])
    assert plain.status_code == controlled.status_code == 200, controlled.text
    info = json.loads(controlled.json()["info"])
    assert not any("alwayson_scripts" in w for w in info["warnings"]), info["warnings"]
    assert not np.array_equal(pixels(plain.json()["images"][0]), pixels(controlled.json()["images"][0]))
    for same in (unit(client, weight=0), unit(client, enabled=False)):  # weight 0, or a disabled unit: no control
        answer = txt2img(client, [same])
        assert [pixels(i).tolist() for i in answer.json()["images"]] == \
            [pixels(i).tolist() for i in plain.json()["images"]]
    # the extension's spellings: control mode and resize mode by index, the older input_image field
    older = unit(client, control_mode=2, resize_mode=0)
    older["input_image"] = older.pop("image")
    assert txt2img(client, [older]).status_code == 200
    two = txt2img(client, [unit(client), unit(client, module="none", control_mode="My prompt is more important")])
    assert two.status_code == 200


@pytest.mark.parametrize("fields, field", [
    ({"weight": 5}, "weight"), ({"model": "nope"}, "model"), ({"module": "depth"}, "module"),
    ({"control_mode": "Whatever"}, "control_mode"), ({"image": "not an image"}, "image"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_start"), ({"resize_mode": 7}, "resize_mode"),
])
def test_bad_unit_fields_get_422_naming_the_field(client, fields, field):
    answer = txt2img(client, [unit(client, **fields)])
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == f"alwayson_scripts.controlnet.args[0].{field}"


def test_controlnet_units_with_the_hires_fix_are_refused(client):
    answer = txt2img(client, [unit(client)], enable_hr=True, hr_scale=2)
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "enable_hr"


def test_mixing_controlnet_is_more_important_with_other_modes_is_refused(client):
    answer = txt2img(client, [unit(client, control_mode="ControlNet is more important"), unit(client)])
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "alwayson_scripts.controlnet.args"


def test_browser_page_uploads_a_control_image_and_previews_it(setup, tmp_path):
    folder, base = setup
    image = tmp_path / "disc.png"
    image.write_bytes(base64.b64decode(disc_png()))
    with serving([str(base), "--controlnet-dir", str(folder / "controlnets")], tmp_path) as url, \
            browser_page(tmp_path, 900, "serve_controlnet.png") as page:
        posted = []
        page.on("request", lambda r: posted.append(r.post_data) if r.url.endswith("/txt2img") else None)
        page.goto(url)
        page.wait_for_selector("#cn-model option", state="attached")
        page.select_option("#cn-module", "silhouette")
        ours = next(o for o in page.eval_on_selector_all("#cn-model option", "os => os.map(o => o.value)")
                    if o.startswith("sil ["))  # not the bundled one, made for the bundled model
        page.select_option("#cn-model", ours)
        page.set_input_files("#cn-image", str(image))
        page.wait_for_function("document.getElementById('cn-preview').naturalWidth === 16")
        page.eval_on_selector("#cn-weight", "e => { e.value = '1.5'; e.dispatchEvent(new Event('input')); }")
        assert page.inner_text("#cn-weight-value") == "1.5"
        page.select_option("#class", CLASSES[0])
        page.fill("#steps", "3")
        page.fill("#batch", "1")
        page.click("#generate")
        page.wait_for_selector('#progress:not([data-state="running"])', timeout=120_000)
        assert page.get_attribute("#progress", "data-state") == "done", page.inner_text("#error")
        page.wait_for_function("document.querySelectorAll('#gallery img').length === 1")
        args = json.loads(posted[-1])["alwayson_scripts"]["controlnet"]["args"]
        assert len(args) == 1 and args[0]["module"] == "silhouette" and args[0]["weight"] == 1.5
        assert args[0]["model"] == ours and args[0]["image"].startswith("data:image/png;base64,")


def test_img2img_takes_controlnet_units_too(client):
    body = {"prompt": "Coat", "steps": 4, "seed": 3, "cfg_scale": 2, "init_images": [disc_png(16)],
            "denoising_strength": 0.6}
    plain = client.post("/sdapi/v1/img2img", json=body)
    if plain.status_code == 422 and "img2img" in plain.text and "pipeline" in plain.text:
        pytest.skip("this server has no img2img pipeline")
    controlled = client.post("/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"controlnet": {
        "args": [unit(client)]}}})
    assert plain.status_code == controlled.status_code == 200, controlled.text
    assert not np.array_equal(pixels(plain.json()["images"][0]), pixels(controlled.json()["images"][0]))
    zero = client.post("/sdapi/v1/img2img", json={**body, "alwayson_scripts": {"controlnet": {
        "args": [unit(client, weight=0)]}}})
    assert np.array_equal(pixels(plain.json()["images"][0]), pixels(zero.json()["images"][0]))
