"""difflab serve, through FastAPI's TestClient: every endpoint, every validation error, auth, body cap, PNG text."""

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from difflab.cli import main
from difflab.conditioning import Condition
from difflab.guidance import Guidance
from difflab.images import to_uint8
from difflab.pipelines.generate import generate
from difflab.pipelines.samplers import SAMPLER_NAMES, offered_samplers
from difflab.nets import build_network
from difflab.samplers import SAMPLERS
from difflab.serve.app import create_app
from difflab.serve.model import load_served_model
from difflab.serve.schemas import MAX_BODY_BYTES
from difflab.train.checkpoint import save_checkpoint
from difflab.train.config import ExperimentConfig

CLASSES = ("Coat", "Bag", "Sneaker")


def write_checkpoint(path, class_names=None, timesteps=100, randomize=False):
    """A randomly initialised tiny U-Net for 16x16 one-channel images (quality is irrelevant here); its zero-initialised
    output layer makes it predict eps = 0 for every class unless `randomize` draws all weights at random."""
    config = ExperimentConfig.from_dict({
        "network": {"kind": "unet", "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                    "attention_levels": [1], "head_dim": 8, "groups": 4,
                    "num_classes": None if class_names is None else len(class_names)},
        "schedule": {"kind": "linear", "timesteps": timesteps},
        "data_shape": [1, 16, 16], "class_names": class_names})
    torch.manual_seed(0)
    net = build_network(config.network)
    for p in net.parameters() if randomize else []:
        torch.nn.init.normal_(p, std=0.1)
    save_checkpoint(path, config, 0, model=net)
    return path


@pytest.fixture(scope="module")
def uncond_path(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("uncond") / "checkpoint.safetensors")


@pytest.fixture(scope="module")
def client(uncond_path):
    with TestClient(create_app(load_served_model(uncond_path))) as client:
        yield client


@pytest.fixture(scope="module")
def strict_client(uncond_path):
    with TestClient(create_app(load_served_model(uncond_path), strict_names=True)) as client:
        yield client


@pytest.fixture(scope="module")
def class_client(tmp_path_factory):
    path = write_checkpoint(tmp_path_factory.mktemp("class") / "checkpoint.safetensors", CLASSES)
    with TestClient(create_app(load_served_model(path))) as client:
        yield client


def txt2img(client, **body):
    response = client.post("/sdapi/v1/txt2img", json={"steps": 3, "seed": 7, **body})
    assert response.status_code == 200, response.text
    result = response.json()
    return result, json.loads(result["info"])


def png(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_txt2img_answers_images_parameters_and_info(client):
    result, info = txt2img(client, batch_size=2, n_iter=2, sampler_name="Euler")
    assert len(result["images"]) == 4 and info["all_seeds"] == [7, 8, 9, 10]
    assert {png(b).size for b in result["images"]} == {(16, 16)}
    assert result["parameters"]["steps"] == 3 and result["parameters"]["sampler_name"] == "Euler"
    assert info["sampler_name"] == "Euler" and info["difflab_sampler"] == "euler" and info["grid"] == "linspace"
    assert info["interrupted"] is False and info["warnings"] == []


def test_png_carries_the_parameters_chunk_in_the_ui_form(client):
    result, info = txt2img(client, sampler_name="DPM++ 2M Karras")  # the UI's older name: DPM++ 2M on Karras
    text = png(result["images"][0]).text["parameters"]
    assert text == info["infotexts"][0]
    assert re.fullmatch(r"Steps: 3, Sampler: DPM\+\+ 2M, Schedule type: Karras, CFG scale: 1, Seed: 7, Size: 16x16, "
                        r"Model hash: [0-9a-f]{10}, Model: uncond\d*", text), text


def test_same_seed_and_settings_give_byte_identical_pngs(client, uncond_path):
    first, _ = txt2img(client, seed=123, batch_size=2, sampler_name="Euler a")
    second, _ = txt2img(client, seed=123, batch_size=2, sampler_name="Euler a")
    with TestClient(create_app(load_served_model(uncond_path))) as fresh:
        third, _ = txt2img(fresh, seed=123, batch_size=2, sampler_name="Euler a")
    other, _ = txt2img(client, seed=124, batch_size=2, sampler_name="Euler a")
    assert first["images"] == second["images"] == third["images"]
    assert other["images"][0] != first["images"][0] and other["images"][0] == first["images"][1]  # image i: seed + i


def test_seed_minus_one_draws_a_seed_and_reports_it(client):
    _, a = txt2img(client, seed=-1)
    _, b = txt2img(client, seed=-1)
    assert 0 <= a["seed"] < 2**32 and a["seed"] != b["seed"]
    assert a["all_seeds"] == [a["seed"]] and f"Seed: {a['seed']}," in a["infotexts"][0]


def test_cfg_scale_on_an_unconditional_model_is_ignored_and_said(client):
    guided, info = txt2img(client, cfg_scale=7)
    assert info["cfg_scale"] == 1 and info["warnings"] == [
        f"cfg_scale ignored: model {info['sd_model_name']} is unconditional, so nothing is guided (cfg_scale 1)"]
    assert guided["images"] == txt2img(client)[0]["images"]


def test_prompt_on_an_unconditional_model_is_ignored_and_said(client):
    result, info = txt2img(client, prompt="a red coat", negative_prompt="blurry", restore_faces=True, tiling=False)
    name = info["sd_model_name"]
    assert info["prompt"] == "" and info["warnings"] == [
        "restore_faces ignored: True asks for something difflab does not do",
        f"prompt ignored: model {name} is unconditional", f"negative_prompt ignored: model {name} is unconditional"]
    assert "a red coat" not in png(result["images"][0]).text["parameters"]
    plain, _ = txt2img(client)
    assert result["images"] == plain["images"]


@pytest.mark.parametrize("entry", offered_samplers(), ids=lambda e: e.name)
def test_every_offered_sampler_name_runs(client, entry):
    _, info = txt2img(client, sampler_name=entry.name, steps=2)
    assert (info["difflab_sampler"], info["grid"]) == (entry.sampler, entry.grid)


def test_sampler_aliases_scheduler_and_sampler_index(client):
    assert txt2img(client, sampler_name="euler A")[1]["sampler_name"] == "Euler a"
    assert txt2img(client, sampler_index="DDIM")[1]["grid"] == "leading"
    assert txt2img(client)[1]["sampler_name"] == "Euler"  # none named: the UI API's sampler_index default
    # "Automatic" is the UI's own schedule of the sampler: Karras for DPM++ 2M, Exponential for DPM++ 2M SDE, which the
    # UI writes as the Schedule type; none for Euler
    for name, grid, label in (("k_dpmpp_2m", "karras", "Karras"), ("DPM++ 2M SDE", "log_snr", "Exponential")):
        _, info = txt2img(client, sampler_name=name, scheduler="Automatic")
        assert info["grid"] == grid and info["scheduler"] == label and f"Schedule type: {label}" in info["infotexts"][0]
    _, info = txt2img(client, sampler_name="DPM++ 2M", scheduler="Uniform")
    assert info["grid"] == "linspace" and "Schedule type: Uniform" in info["infotexts"][0]
    assert "Schedule type" not in txt2img(client, sampler_name="Euler")[1]["infotexts"][0]
    # a scheduler chosen by name is written by its label, also where it is the sampler's own grid (get_sigmas writes
    # any scheduler with a function) and where two labels share a grid (Normal and Uniform are both linspace here)
    for fields, label in (({"scheduler": "Uniform"}, "Uniform"), ({"scheduler": "normal"}, "Normal"),
                          ({"sampler_name": "Euler Uniform"}, "Uniform")):
        _, info = txt2img(client, **{"sampler_name": "Euler", **fields})
        assert (info["sampler_name"], info["grid"], info["scheduler"]) == ("Euler", "linspace", label)
        assert f"Sampler: Euler, Schedule type: {label}," in info["infotexts"][0]
    # an unknown sampler with a scheduler suffix falls back to DPM++ 2M on that scheduler, as the UI's
    # get_sampler_and_scheduler does
    _, info = txt2img(client, sampler_name="Foo Uniform")
    assert (info["sampler_name"], info["grid"], info["scheduler"]) == ("DPM++ 2M", "linspace", "Uniform")


def test_unipc_runs_with_the_web_uis_settings(client):
    """The UI's UniPC takes its settings uni_pc_order 3 and uni_pc_variant bh1, not difflab's unipc defaults; they are
    its defaults, so the infotext writes none of them."""
    _, info = txt2img(client, sampler_name="UniPC", steps=3)
    assert (info["difflab_sampler"], info["grid"]) == ("unipc", "linspace")
    assert info["sampler_options"] == {"order": 3, "solver_type": "bh1"}
    assert info["infotexts"][0].startswith("Steps: 3, Sampler: UniPC, CFG scale: 1, Seed:")


def test_lcm_is_the_consistency_sampler(client):
    """The UI's LCM (sample_lcm: x = denoised, then + sigma_next z) is difflab's consistency sampler."""
    names = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert names.index("LCM") > names.index("DDIM")  # after the k-diffusion and timestep samplers, as in the UI
    result, info = txt2img(client, sampler_name="k_lcm", steps=2)
    assert (info["sampler_name"], info["difflab_sampler"], info["grid"]) == ("LCM", "consistency", "trailing")
    assert "Sampler: LCM," in info["infotexts"][0] and info["difflab_parallel"] is None
    assert txt2img(client, sampler_name="LCM Karras", steps=2)[1]["grid"] == "karras"


def test_parallel_samplers_by_name_window_and_tolerance(tmp_path):
    """ParaDiGMS through the API: tolerance 0 gives the sequential sampler's images; a window reports its rounds."""
    with TestClient(create_app(load_served_model(write_checkpoint(tmp_path / "m.safetensors", randomize=True)))) as c:
        sequential, _ = txt2img(c, sampler_name="DPM++ 2M", steps=12, batch_size=2)
        exact, exact_info = txt2img(c, sampler_name="ParaDiGMS DPM++ 2M", steps=12, batch_size=2,
                                    difflab_parallel_tolerance=0, difflab_parallel_window=4)
        loose, info = txt2img(c, sampler_name="ParaDiGMS DPM++ 2M", steps=12, batch_size=2, n_iter=2,
                              difflab_parallel_window=12, difflab_parallel_tolerance=1)
        ignored = txt2img(c, sampler_name="Euler", difflab_parallel_window=4)[1]
        bad = c.post("/sdapi/v1/txt2img", json={"sampler_name": "ParaDiGMS DDIM", "difflab_parallel_tolerance": 2})
    for a, b in zip(sequential["images"], exact["images"]):
        assert np.abs(np.asarray(png(a), np.int16) - np.asarray(png(b), np.int16)).max() <= 1
    assert exact_info["difflab_sampler"] == "paradigms_dpmpp_2m" and exact_info["grid"] == "karras"
    assert exact_info["difflab_parallel"][0]["rounds"] >= 12 // 4  # a window of 4 passes 12 steps in >= 3 rounds
    assert "ParaDiGMS window: 4, ParaDiGMS tolerance: 0.0," in exact_info["infotexts"][0]
    rounds = [batch["rounds"] for batch in info["difflab_parallel"]]
    assert len(rounds) == 2 and all(1 <= r < 12 for r in rounds)  # fewer sequential calls than steps
    assert all(batch["evaluations"] >= 12 for batch in info["difflab_parallel"])
    assert ignored["warnings"] == ["difflab_parallel_window ignored: sampler 'Euler' does not use it"]
    assert bad.status_code == 422 and "difflab_parallel_tolerance" in bad.text


def test_only_registered_samplers_are_offered(client, strict_client, monkeypatch):
    monkeypatch.delitem(SAMPLERS, "heun")
    names = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert "Heun" not in names and "Euler" in names
    _, info = txt2img(client, sampler_name="Heun")
    assert info["sampler_name"] == "DPM++ 2M" and info["warnings"] == [
        "sampler_name 'Heun' needs sampler 'heun', which difflab does not have yet; choose from DPM++ 2M, "
        "DPM++ 2M SDE, DPM++ 2M SDE Heun, DPM++ 2S a, DPM++ 3M SDE, Euler a, Euler, DPM2, DPM2 a, DDIM, UniPC, LCM, "
        "ParaDiGMS DDIM, ParaDiGMS DDPM, ParaDiGMS DPM++ 2M; used 'DPM++ 2M'"]
    response = strict_client.post("/sdapi/v1/txt2img", json={"sampler_name": "Heun"})
    assert response.status_code == 422 and "does not have yet" in response.json()["detail"]
    assert all(e.sampler in SAMPLERS for e in offered_samplers())
    assert len({e.name for e in SAMPLER_NAMES}) == len(SAMPLER_NAMES)
    aliases = [a for e in SAMPLER_NAMES for a in e.aliases]
    assert len(set(aliases)) == len(aliases)


@pytest.mark.parametrize("body, field, words", [
    ({"steps": 0}, "steps", "steps must lie in 1..1000, got 0"),
    ({"steps": 1001}, "steps", "steps must lie in 1..1000, got 1001"),
    ({"steps": "many"}, "steps", "steps must be an integer in 1..1000, got 'many'"),
    ({"steps": 2.5}, "steps", "steps must be an integer in 1..1000, got 2.5"),
    ({"steps": 500}, "steps", "steps must be <= the schedule's 100 timesteps, got 500"),
    ({"seed": -2}, "seed", "seed must lie in -1..4294967295, got -2"),
    ({"seed": 2**32}, "seed", "seed must lie in -1..4294967295"),
    ({"batch_size": 0}, "batch_size", "batch_size must lie in 1..64, got 0"),
    ({"batch_size": 65}, "batch_size", "batch_size must lie in 1..64, got 65"),
    ({"n_iter": 0}, "n_iter", "n_iter must lie in 1..64, got 0"),
    ({"batch_size": 8, "n_iter": 9}, "body", "batch_size * n_iter must be <= 64, got 8 * 9"),
    ({"cfg_scale": 31}, "cfg_scale", "cfg_scale must lie in 0..30, got 31"),
    ({"prompt": "x" * 2001}, "prompt", "prompt must be at most 2000 characters"),
    ({"prompt": 5}, "prompt", "prompt must be a string, got 5"),
    ({"width": 4096}, "width", "width must lie in 1..2048, got 4096"),
    ({"height": 0}, "height", "height must lie in 1..2048, got 0"),
    ({"width": 2048, "height": 2048, "batch_size": 5}, "body", "batch_size * n_iter * width * height must be <= "
                                                                "16777216 pixels (64 images of 512x512), got 20971520"),
    ({"eta": -0.5, "sampler_name": "DDIM"}, "eta", "eta must be >= 0, got -0.5"),
    ({"eta": -0.5, "sampler_name": "Euler"}, "eta", "eta must be >= 0, got -0.5"),  # even where it is not used
    ({"s_noise": 0, "sampler_name": "Euler"}, "s_noise", "s_noise must be > 0, got 0"),
    ({"s_tmin": 5, "s_tmax": 2, "sampler_name": "Euler"}, "s_tmin", "s_tmin must be <= s_tmax, got 5.0 > 2.0"),
    ({"sampler_name": "Euler b"}, "sampler_name", "sampler_name must be one of DPM++ 2M, DPM++ 2M SDE, DPM++ 2M SDE"),
    ({"sampler_name": "PLMS"}, "sampler_name", "needs sampler 'plms', which difflab does not have yet"),
    ({"sampler_name": "Euler a Beta"}, "sampler_name", "ends in scheduler 'Beta', which needs a grid difflab does not"),
    ({"scheduler": "Beta"}, "scheduler", "'Beta' needs a grid difflab does not have yet; choose from Automatic, "
                                         "Uniform, Karras, Exponential, Normal"),
    ({"scheduler": "Karras!"}, "scheduler", "scheduler must be one of Automatic, Uniform, Karras, Exponential, Normal"),
    ({"enable_hr": True, "hr_sampler_name": "Euler b"}, "hr_sampler_name",
     "hr_sampler_name must be one of DPM++ 2M, DPM++ 2M SDE"),
    ({"enable_hr": True, "hr_scheduler": "Beta"}, "hr_scheduler", "hr_scheduler 'Beta' needs a grid difflab does not"),
    ({"width": 32, "hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler", "hr_upscaler must be one of None, Lanczos, Nearest"),
    ([1, 2], "body", "body must be a JSON object"),
])
def test_each_bad_field_gets_one_sentence_naming_it(strict_client, body, field, words):
    response = strict_client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422
    answer = response.json()
    assert words in answer["detail"] and [e["field"] for e in answer["errors"]] == [field]


def test_several_bad_fields_are_all_named_and_invalid_json_is_explained(client):
    answer = client.post("/sdapi/v1/txt2img", json={"steps": 0, "batch_size": 99}).json()
    assert [e["field"] for e in answer["errors"]] == ["steps", "batch_size"]
    response = client.post("/sdapi/v1/txt2img", content=b'{"steps": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]


def test_img2img_is_validated_with_a_clear_422(client):
    image = base64.b64encode(b"png").decode()  # not an image (tests/test_serve_img2img.py edits real ones)
    response = client.post("/sdapi/v1/img2img", json={"init_images": [image], "denoising_strength": 0.5})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "init_images.0"
    response = client.post("/sdapi/v1/img2img", json={"init_images": [image], "denoising_strength": 1.5})
    assert response.json()["detail"] == "denoising_strength must lie in 0..1, got 1.5"
    response = client.post("/sdapi/v1/img2img", json={"init_images": image})
    assert response.json()["detail"] == f"init_images must be a list, got {image!r}"
    assert client.post("/sdapi/v1/img2img", json={"init_images": [image] * 65}).json()["detail"] == \
        "init_images must hold at most 64 items"


def test_class_model_takes_a_class_name_as_prompt(class_client):
    coat, info = txt2img(class_client, prompt="coat")
    assert info["prompt"] == "Coat" and info["class_label"] == 0
    assert png(coat["images"][0]).text["parameters"].startswith("Coat\nSteps: 3,")
    by_index, _ = txt2img(class_client, prompt="0")
    bag, _ = txt2img(class_client, prompt="Bag")
    unconditional, info = txt2img(class_client, prompt="")
    assert coat["images"] == by_index["images"] and bag["images"] != coat["images"]
    assert info["class_label"] is None and unconditional["images"] != coat["images"]


def test_class_model_cfg_scale_is_one_plus_the_guidance_weight(tmp_path):
    path = write_checkpoint(tmp_path / "checkpoint.safetensors", CLASSES, randomize=True)
    model = load_served_model(path)
    with TestClient(create_app(model)) as client:
        guided, info = txt2img(client, prompt="Bag", negative_prompt="coat", cfg_scale=3, batch_size=2)
        plain, _ = txt2img(client, prompt="Bag", batch_size=2, cfg_scale=1)
        null_negative, _ = txt2img(client, prompt="Bag", cfg_scale=3, batch_size=2)
        ignored, ignored_info = txt2img(client, prompt="Bag", negative_prompt="Coat", batch_size=2, cfg_scale=1)
        default, default_info = txt2img(client, prompt="Bag", batch_size=2)
    assert info["cfg_scale"] == 3 and info["negative_prompt"] == "Coat" and info["warnings"] == []
    parameters = png(guided["images"][0]).text["parameters"]
    assert parameters.startswith("Bag\nNegative prompt: Coat\nSteps: 3,") and "CFG scale: 3," in parameters
    pixels = {name: [np.asarray(png(image)) for image in result["images"]]
              for name, result in (("guided", guided), ("plain", plain), ("null", null_negative), ("ignored", ignored))}
    # the same images as generate() with w = cfg_scale - 1 and the negative label (no sampler named: Euler)
    expected = to_uint8(generate(model.denoiser, model.config.data_shape, 2, sampler="euler", steps=3,
                                 grid="linspace", seed=7, batch=2, cond=Condition(torch.tensor([1, 1])),
                                 guidance=Guidance(cfg=2.0, negative=Condition(torch.tensor([0])))))
    assert np.array_equal(np.stack(pixels["guided"]), expected)
    assert not np.array_equal(pixels["guided"][0], pixels["plain"][0])
    assert not np.array_equal(pixels["guided"][0], pixels["null"][0])
    assert np.array_equal(np.stack(pixels["ignored"]), np.stack(pixels["plain"]))
    assert ignored_info["negative_prompt"] == ""
    # a conditional model's default is cfg_scale 2: w = 1 (README's guidance trade-off)
    assert default_info["cfg_scale"] == 2 and not np.array_equal(np.asarray(png(default["images"][0])),
                                                                  pixels["plain"][0])
    assert client.get("/difflab/v1/model").json()["default_cfg_scale"] == 2
    assert ignored_info["warnings"] == ["negative_prompt ignored: it acts only through guidance, with cfg_scale > 1"]


@pytest.mark.parametrize("body, field, words", [
    ({"prompt": "a dog"}, "prompt", "prompt must be one class of model class"),
    ({"prompt": "3"}, "prompt", "(a name or 0..2: Coat, Bag, Sneaker)"),
    ({"prompt": "Bag", "negative_prompt": "a cat", "cfg_scale": 3}, "negative_prompt",
     "negative_prompt must be one class of model class"),
    ({"prompt": "Bag", "cfg_scale": 0.5}, "cfg_scale", "cfg_scale must lie in 1..30 on model class"),
])
def test_class_model_refuses_what_it_cannot_do(class_client, body, field, words):
    response = class_client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422 and words in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == field


def test_read_only_endpoints(client, class_client):
    samplers = client.get("/sdapi/v1/samplers").json()
    assert samplers[0] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"],
                           "options": {"scheduler": "karras", "difflab_sampler": "dpmpp_2m", "grid": "karras"}}
    assert next(s for s in samplers if s["name"] == "Euler a") == {
        "name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"],
        "options": {"difflab_sampler": "euler_ancestral", "grid": "linspace"}}
    [model] = client.get("/sdapi/v1/sd-models").json()
    assert model["title"] == f"{model['model_name']} [{model['hash']}]" and model["sha256"].startswith(model["hash"])
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == model["title"]
    bad = client.get("/sdapi/v1/progress", params={"skip_current_image": "maybe"}).json()
    assert bad["detail"] == "skip_current_image must be true or false, got 'maybe'"
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    assert client.post("/sdapi/v1/interrupt").json() == {"interrupted": False}
    assert client.get("/difflab/v1/model").json()["conditioning"] == "none"
    info = class_client.get("/difflab/v1/model").json()
    assert info["conditioning"] == "class" and info["class_names"] == list(CLASSES) and info["width"] == 16


def test_page_static_files_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="generate"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == client.get("/static/style.css").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/progress", "/sdapi/v1/interrupt"} <= set(paths)


def test_request_bodies_are_capped(client):
    big = b'{"prompt": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = client.post("/sdapi/v1/txt2img", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and f"at most {MAX_BODY_BYTES} bytes" in response.json()["detail"]
    chunked = client.post("/sdapi/v1/txt2img", content=iter([big[:1000], big[1000:]]),
                          headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413


def test_api_auth_guards_the_api_page_and_docs(uncond_path):
    with TestClient(create_app(load_served_model(uncond_path), auth=("ann", "s3cret"))) as client:
        for path in ("/", "/sdapi/v1/samplers", "/docs", "/static/app.js"):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
            assert client.get(path, auth=("ann", "wrong")).status_code == 401
            assert client.get(path, auth=("ann", "s3cret")).status_code == 200
        assert client.post("/sdapi/v1/txt2img", json={"steps": 1}).status_code == 401
        assert client.post("/sdapi/v1/txt2img", json={"steps": 1}, auth=("ann", "s3cret")).status_code == 200
        assert client.get("/", headers={"Authorization": "Basic %%%"}).status_code == 401


@pytest.mark.parametrize("argv, words", [
    (["--api-auth", "nopassword"], "--api-auth must be USER:PASS"),
    (["--queue-size", "-1"], "--queue-size must be >= 0"),
])
def test_serve_command_rejects_bad_flags(uncond_path, capsys, argv, words):
    assert main(["serve", str(uncond_path), *argv]) == 2
    assert words in capsys.readouterr().err


def test_serve_command_refuses_point_models(tmp_path, capsys):
    config = ExperimentConfig.from_dict({"network": {"kind": "mlp", "hidden": 16, "depth": 1}, "data_shape": [2]})
    save_checkpoint(tmp_path / "toy.safetensors", config, 0, model=build_network(config.network))
    assert main(["serve", str(tmp_path / "toy.safetensors")]) == 2
    assert "serve needs images" in capsys.readouterr().err
