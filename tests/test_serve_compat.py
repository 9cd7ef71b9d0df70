"""difflab serve against requests in the AUTOMATIC1111 web UI API's own shape: its full default txt2img body, its
scheduler spellings, its 512x512 default, model switching, png-info, skip, per-task progress and its listing routes."""

import base64
import io
import json
import os
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from test_serve_api import CLASSES, png, txt2img, write_checkpoint
from test_serve_queue import Gate, in_background, wait_for

from difflab.cli import main
from difflab.conditioning import Condition
from difflab.guidance import Guidance
from difflab.images import to_uint8
from difflab.pipelines.dialect import RequestError
from difflab.pipelines.generate import generate
from difflab.serve.a1111 import infotext, parse_infotext
from difflab.serve.app import create_app
from difflab.serve.catalog import Catalog
from difflab.serve.listings import cuda_memory, ram
from difflab.serve.model import checkpoint_name, load_served_model
from difflab.serve.resize import model_shape_at

# StableDiffusionTxt2ImgProcessingAPI().model_dump() of the web UI v1.10: every field at its default
# (modules/processing.py StableDiffusionProcessing and ...Txt2Img, and modules/api/models.py's additions).
A1111_V1_10_DEFAULTS = {
    "prompt": "", "negative_prompt": None, "styles": None, "seed": -1, "subseed": -1, "subseed_strength": 0,
    "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": None, "scheduler": None, "batch_size": 1,
    "n_iter": 1, "steps": 50, "cfg_scale": 7.0, "width": 512, "height": 512, "restore_faces": None, "tiling": None,
    "do_not_save_samples": False, "do_not_save_grid": False, "eta": None, "denoising_strength": 0.75,
    "s_min_uncond": None, "s_churn": None, "s_tmax": None, "s_tmin": None, "s_noise": None, "override_settings": None,
    "override_settings_restore_afterwards": True, "refiner_checkpoint": None, "refiner_switch_at": None,
    "disable_extra_networks": False, "firstpass_image": None, "comments": None, "enable_hr": False,
    "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2.0, "hr_upscaler": None, "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None, "hr_scheduler": None,
    "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": None, "sampler_index": "Euler", "script_name": None,
    "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {}, "infotext": None,
}
# the same body from v1.5, whose defaults were values rather than nulls
A1111_V1_5_DEFAULTS = {**A1111_V1_10_DEFAULTS, "negative_prompt": "", "restore_faces": False, "tiling": False,
                       "s_churn": 0.0, "s_tmin": 0.0, "s_noise": 1.0, "s_min_uncond": 0.0}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A --models-dir with two tiny models: a class-conditional one and an unconditional one with random weights."""
    root = tmp_path_factory.mktemp("models")
    write_checkpoint(root / "classes" / "checkpoint.safetensors", CLASSES)
    write_checkpoint(root / "noise.safetensors", randomize=True)
    return root


@pytest.fixture(scope="module")
def client(models_dir):
    """Serving the class model, with the models dir."""
    model = load_served_model(models_dir / "classes" / "checkpoint.safetensors")
    with TestClient(create_app(model, catalog=Catalog(model, models_dir))) as client:
        yield client


@pytest.mark.parametrize("defaults", [A1111_V1_10_DEFAULTS, A1111_V1_5_DEFAULTS], ids=["v1.10", "v1.5"])
def test_a_full_default_body_is_served_without_warnings(client, defaults):
    result, info = txt2img(client, **{**defaults, "steps": 4, "seed": 3, "prompt": "Bag"})
    assert info["warnings"] == [] and (info["width"], info["height"]) == (512, 512)
    assert (info["sampler_name"], info["cfg_scale"], info["upscaler"]) == ("Euler", 7, "Lanczos")
    image = png(result["images"][0])
    assert image.size == (512, 512)
    assert image.text["parameters"].startswith("Bag\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 512x512, "
                                               "Upscaled from: 16x16, Upscaler: Lanczos, Model hash: ")
    assert client.post("/sdapi/v1/txt2img", json={**defaults, "steps": 2, "send_images": False}).json()["images"] == []
    # on an unconditional model the default cfg_scale 7 is ignored, as the prompt is
    _, info = txt2img(client, **{**defaults, "steps": 2, "override_settings": {"sd_model_checkpoint": "noise"}})
    assert info["warnings"] == ["cfg_scale ignored: model noise is unconditional, so nothing is guided (cfg_scale 1)"]


def test_fields_that_ask_for_something_else_are_named_in_warnings(client):
    _, info = txt2img(client, prompt="Bag", tiling=True, subseed_strength=0.5, save_images=True,
                      override_settings={"CLIP_stop_at_last_layers": 2}, some_extension_field="x")
    assert info["warnings"] == [f"{field} ignored: {value!r} asks for something difflab does not do" for field, value
                                in (("tiling", True), ("subseed_strength", 0.5), ("save_images", True),
                                    ("some_extension_field", "x"), ("override_settings.CLIP_stop_at_last_layers", 2))]


def test_scheduler_names_labels_and_suffixes_give_the_same_images(client):
    images = {}
    for body in ({"sampler_name": "DPM++ 2M Karras"}, {"sampler_name": "DPM++ 2M", "scheduler": "karras"},
                 {"sampler_name": "DPM++ 2M", "scheduler": "Karras"},
                 {"sampler_name": "dpm++ 2m", "scheduler": "KARRAS"},
                 {"sampler_name": "DPM++ 2M Karras", "scheduler": "Exponential"}):  # the suffix wins, as in the UI
        result, info = txt2img(client, prompt="Bag", **body)
        assert (info["difflab_sampler"], info["grid"], info["warnings"]) == ("dpmpp_2m", "karras", [])
        images[json.dumps(body)] = np.asarray(png(result["images"][0]))
    first = next(iter(images.values()))
    assert all(np.array_equal(pixels, first) for pixels in images.values())  # the PNG texts differ: the names
    result, info = txt2img(client, prompt="Bag", sampler_name="Euler a Karras")
    assert (info["sampler_name"], info["grid"], info["scheduler"]) == ("Euler a", "karras", "Karras")
    assert "Sampler: Euler a, Schedule type: Karras," in png(result["images"][0]).text["parameters"]
    assert client.get("/sdapi/v1/schedulers").json()[2] == {"name": "karras", "label": "Karras", "aliases": None,
                                                            "default_rho": 7.0, "need_inner_model": False,
                                                            "grid": "karras"}


def test_unknown_names_fall_back_to_the_default_with_a_warning(client):
    _, info = txt2img(client, prompt="Bag", sampler_name="Restart", scheduler="Align Your Steps", width=32,
                      hr_upscaler="Latent")
    # the UI's first sampler name under "Automatic": its own schedule, Karras
    assert (info["sampler_name"], info["grid"], info["upscaler"]) == ("DPM++ 2M", "karras", "Lanczos")
    scheduler = ("scheduler 'Align Your Steps' needs a grid difflab does not have yet; choose from Automatic, "
                 "Uniform, Karras, Exponential, Normal; used Automatic")
    assert info["warnings"][0] == scheduler and info["warnings"][2].startswith("unknown upscaler 'Latent'")
    assert info["warnings"][1].startswith("sampler_name 'Restart' needs sampler 'restart', which difflab does not")
    assert info["warnings"][1].endswith("; used 'DPM++ 2M'") and info["warnings"][2].endswith("; used Lanczos")
    assert txt2img(client, prompt="Bag", sampler_name="Euler b")[1]["warnings"][0].startswith("unknown sampler")


@pytest.mark.parametrize("upscaler, factor", [("Nearest", 2), ("nearest", 3)])
def test_another_size_is_the_models_image_resized(client, upscaler, factor):
    native, _ = txt2img(client, prompt="Bag", seed=9)
    resized, info = txt2img(client, prompt="Bag", seed=9, width=16 * factor, height=16 * factor, hr_upscaler=upscaler)
    pixels = np.asarray(png(native["images"][0]))
    assert np.array_equal(np.asarray(png(resized["images"][0])), pixels.repeat(factor, 0).repeat(factor, 1))
    assert (info["native_width"], info["upscaler"]) == (16, "Nearest")
    stretched, _ = txt2img(client, prompt="Bag", width=40, height=24)
    assert png(stretched["images"][0]).size == (40, 24)


def test_a_unet_runs_at_another_size_when_asked(client, models_dir):
    result, info = txt2img(client, prompt="Bag", width=40, height=24, difflab_size_by="model")
    assert png(result["images"][0]).size == (40, 24) and (info["size_by"], info["upscaler"]) == ("model", None)
    assert "Size: 40x24, Trained size: 16x16," in info["infotexts"][0]
    model = load_served_model(models_dir / "classes" / "checkpoint.safetensors")
    expected = to_uint8(generate(model.denoiser, (1, 24, 40), 1, sampler="euler", steps=3, grid="linspace",
                                 seed=7, cond=Condition(torch.tensor([1])), guidance=Guidance(cfg=1.0)))
    assert np.array_equal(np.asarray(png(result["images"][0]))[None], expected)
    for body, field, words in (({"width": 41}, "width", "width must be a multiple of 2 to run model classes"),
                               ({"difflab_size_by": "x"}, "difflab_size_by",
                                "difflab_size_by must be 'upscaler' or 'model', got 'x'")):
        refused = client.post("/sdapi/v1/txt2img", json={"difflab_size_by": "model", **body})
        assert refused.status_code == 422 and words in refused.json()["detail"]
        assert refused.json()["errors"][0]["field"] == field


def test_other_networks_make_other_sizes_by_upscaler_only():
    config = SimpleNamespace(network=SimpleNamespace(patch_size=4), data_shape=[1, 16, 16])  # a DiT's, say
    with pytest.raises(RequestError, match="difflab_size_by model needs a convolutional network .a U-Net.; model d is "
                                           "not one, so another size is made by hr_upscaler") as refused:
        model_shape_at(config, 32, 32, "d")
    assert refused.value.field == "difflab_size_by"


def test_sampler_options_reach_the_samplers_that_use_them(client, models_dir):
    model = load_served_model(models_dir / "classes" / "checkpoint.safetensors")
    for sampler, name, options in (("DDIM", "ddim", {"eta": 1.0}),
                                   ("Euler", "euler", {"s_churn": 2.0, "s_noise": 1.1}),
                                   ("DPM++ 2M SDE Karras", "dpmpp_2m_sde", {"eta": 0.5, "s_noise": 0.9})):
        result, info = txt2img(client, prompt="Bag", cfg_scale=1, sampler_name=sampler, **options)
        plain, _ = txt2img(client, prompt="Bag", cfg_scale=1, sampler_name=sampler)
        expected = to_uint8(generate(model.denoiser, model.config.data_shape, 1, sampler=name, steps=3,
                                     grid=info["grid"], seed=7, cond=Condition(torch.tensor([1])), options=options))
        assert np.array_equal(np.asarray(png(result["images"][0]))[None], expected)
        assert result["images"] != plain["images"] and info["sampler_options"] == options
    _, info = txt2img(client, prompt="Bag", sampler_name="DPM++ 2M", s_churn=0.5, s_noise=1.0, eta=0.0)
    assert info["warnings"] == ["eta ignored: sampler 'DPM++ 2M' does not use it",
                                "s_churn ignored: sampler 'DPM++ 2M' does not use it"]  # s_noise 1 changes nothing
    assert txt2img(client, prompt="Bag", sampler_name="Euler", s_tmax=0)[1]["sampler_options"] == {}  # 0 is infinite


@pytest.mark.parametrize("sampler,options,written", [
    ("DDIM", {"eta": 0.5}, {"Eta DDIM": "0.5"}), ("DDIM", {"eta": 0.0}, {}),  # the UI's DDIM default is 0
    ("DPM++ 2M SDE Karras", {"eta": 0.5, "s_noise": 0.9}, {"Eta": "0.5", "Sigma noise": "0.9"}),
    ("DPM++ 2M SDE Karras", {"eta": 1.0, "s_noise": 1.0}, {}), ("Euler a", {"eta": 1.0}, {}),  # k-diffusion's: 1
    ("Euler", {"s_churn": 2.0, "s_tmin": 0.0}, {"Sigma churn": "2.0"}),
])
def test_infotext_writes_the_options_that_differ_from_the_samplers_defaults_under_the_uis_keys(client, sampler,
                                                                                                options, written):
    text = txt2img(client, prompt="Bag", sampler_name=sampler, **options)[1]["infotexts"][0]
    keys = ("Eta", "Eta DDIM", "Sigma churn", "Sigma tmin", "Sigma noise")
    assert {key: value for key, value in parse_infotext(text).items() if key in keys} == written


def test_png_info_parses_difflab_infotext_back(client):
    result, info = txt2img(client, prompt="Bag", negative_prompt="Coat", cfg_scale=3, sampler_name="Euler a Karras",
                           width=32, height=24)
    answer = client.post("/sdapi/v1/png-info", json={"image": result["images"][0]}).json()
    assert answer["info"] == info["infotexts"][0] and answer["items"] == {}
    assert answer["parameters"] == {
        "Prompt": "Bag", "Negative prompt": "Coat", "Steps": "3", "Sampler": "Euler a", "Schedule type": "Karras",
        "CFG scale": "3", "Seed": "7", "Size-1": "32", "Size-2": "24", "Upscaled from-1": "16", "Upscaled from-2": "16",
        "Upscaler": "Lanczos", "Model hash": info["sd_model_hash"], "Model": "classes"}
    data_uri = client.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + result["images"][0]})
    assert data_uri.json() == answer
    refused = client.post("/sdapi/v1/png-info", json={"image": "not an image"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "image"


def test_infotext_quotes_what_would_break_its_line_and_parses_it_back():
    text = infotext("a coat,\nwith: a belt", "", {"Steps": 3, "Seed": 1, "Model": "runs/a, b: c",
                                                  "Schedule type": "Automatic"})
    assert text == 'a coat,\nwith: a belt\nSteps: 3, Seed: 1, Model: "runs/a, b: c"'
    assert parse_infotext(text) == {"Prompt": "a coat,\nwith: a belt", "Negative prompt": "", "Steps": "3",
                                    "Seed": "1", "Model": "runs/a, b: c"}
    # as in the UI, a last line of fewer than 3 settings is part of the prompt
    assert parse_infotext("a\nSteps: 3, Seed: 1") == {"Prompt": "a\nSteps: 3, Seed: 1", "Negative prompt": ""}


def test_png_info_keeps_other_text_chunks(client):
    buffer, info = io.BytesIO(), PngInfo()
    info.add_text("parameters", "a\nSteps: 1, Sampler: Euler, Seed: 2")
    info.add_text("Software", "elsewhere")
    Image.new("L", (2, 2)).save(buffer, format="PNG", pnginfo=info)
    answer = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(buffer.getvalue()).decode()}).json()
    assert answer["items"] == {"Software": "elsewhere"} and answer["parameters"]["Sampler"] == "Euler"


def test_listing_routes_answer_in_the_web_uis_shapes(client):
    get = {path: client.get(f"/sdapi/v1/{path}") for path in (
        "schedulers", "upscalers", "embeddings", "loras", "cmd-flags", "memory", "scripts", "script-info", "sd-vae",
        "extensions", "hypernetworks", "face-restorers", "prompt-styles", "realesrgan-models", "latent-upscale-modes")}
    assert {path: r.status_code for path, r in get.items()} == {path: 200 for path in get}
    assert [s["label"] for s in get["schedulers"].json()] == ["Automatic", "Uniform", "Karras", "Exponential", "Normal"]
    assert [u["name"] for u in get["upscalers"].json()] == ["None", "Lanczos", "Nearest", "Bilinear", "Bicubic"]
    assert [m["name"] for m in get["latent-upscale-modes"].json()] == [  # modules/shared.py latent_upscale_modes
        "Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
        "Latent (nearest-exact)"]
    assert get["embeddings"].json() == {"loaded": {}, "skipped": {}}
    assert get["scripts"].json() == {"txt2img": [], "img2img": []}
    assert all(get[path].json() == [] for path in ("loras", "sd-vae", "extensions", "script-info"))
    memory = get["memory"].json()
    assert 0 < memory["ram"]["used"] < memory["ram"]["total"] and memory["ram"]["free"] > 0
    assert memory["cuda"] == {"error": "unavailable"} or memory["cuda"]["system"]["total"] > 0


def test_memory_reports_cuda_in_the_web_uis_shape(monkeypatch):
    stats = {"allocated_bytes.all.current": 5, "allocated_bytes.all.peak": 9, "num_ooms": 1}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (30, 100))
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda: stats)
    cuda = cuda_memory()
    assert cuda["system"] == {"free": 30, "used": 70, "total": 100} and cuda["allocated"] == {"current": 5, "peak": 9}
    assert cuda["events"] == {"retries": 0, "oom": 1} and set(cuda) == {"system", "active", "allocated", "reserved",
                                                                        "inactive", "events"}

    def no_sysconf(name):
        raise ValueError(f"unknown {name}")

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert ram()["error"].startswith("unknown SC_PAGE_SIZE")


def test_models_in_the_models_dir_are_listed_and_switched_between_requests(client, models_dir):
    models = client.get("/sdapi/v1/sd-models").json()
    assert [m["model_name"] for m in models] == ["classes", "noise"]
    noise = models[1]["title"]
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": noise}).status_code == 200
    try:
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == noise
        assert txt2img(client)[1]["sd_model_name"] == "noise"
        assert client.get("/difflab/v1/model").json()["conditioning"] == "none"
        # for one request: the class model, by its name; then back
        _, info = txt2img(client, prompt="Bag", override_settings={"sd_model_checkpoint": "classes"})
        assert info["sd_model_name"] == "classes" and info["warnings"] == []
        assert txt2img(client)[1]["sd_model_name"] == "noise"
        # restore_afterwards false keeps it
        txt2img(client, override_settings={"sd_model_checkpoint": models[0]["title"]},
                override_settings_restore_afterwards=False)
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == models[0]["title"]
    finally:
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "classes"})


def test_unknown_checkpoints_are_named_and_refresh_finds_new_ones(client, models_dir):
    for body, field in (({"sd_model_checkpoint": "nope"}, "sd_model_checkpoint"),):
        refused = client.post("/sdapi/v1/options", json=body)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == field
        assert "unknown checkpoint 'nope': sd_model_checkpoint must be one of classes [" in refused.json()["detail"]
    refused = client.post("/sdapi/v1/txt2img", json={"override_settings": {"sd_model_checkpoint": "later"}})
    assert refused.json()["errors"][0]["field"] == "override_settings.sd_model_checkpoint"
    write_checkpoint(models_dir / "later.safetensors")
    assert "later" not in [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert "later" in [m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()]
    ignored = client.post("/sdapi/v1/options", json={"samples_format": "jpg", "live_previews_enable": False})
    assert ignored.status_code == 200 and ignored.headers["X-Difflab-Ignored"] == "samples_format"
    assert client.get("/sdapi/v1/options").json()["live_previews_enable"] is False
    client.post("/sdapi/v1/options", json={"live_previews_enable": True})
    (models_dir / "later.safetensors").unlink()
    client.post("/sdapi/v1/refresh-checkpoints")


def test_run_files_are_named_by_their_folder_so_two_students_differ(tmp_path):
    runs = tmp_path / "runs"
    assert checkpoint_name(runs / "pd" / "round_2" / "student.safetensors", runs) == "pd/round_2"
    assert checkpoint_name(runs / "cd" / "student.safetensors", runs) == "cd"
    assert checkpoint_name(runs / "cd" / "student.safetensors") == "cd"
    assert checkpoint_name(runs / "base" / "checkpoint.safetensors") == "base"
    assert checkpoint_name(runs / "cd" / "student_v2.safetensors", runs) == "cd/student_v2"
    assert checkpoint_name(runs / "noise.safetensors", runs) == "noise"


@pytest.fixture
def gated(models_dir):
    model = load_served_model(models_dir / "classes" / "checkpoint.safetensors")
    gate = Gate(model.denoiser.net)
    with TestClient(create_app(model, catalog=Catalog(model, models_dir), queue_size=2)) as client:
        yield client, gate
        gate.release()


def test_a_model_switch_waits_for_the_running_request(gated):
    client, gate = gated
    running = in_background(client, {"steps": 2, "prompt": "Bag", "cfg_scale": 1, "sampler_name": "Euler"})
    wait_for(client, lambda p: p["state"]["job"] == "txt2img")
    box = {}
    switch = threading.Thread(target=lambda: box.setdefault("r", client.post(
        "/sdapi/v1/options", json={"sd_model_checkpoint": "noise"})))
    switch.start()
    wait_for(client, lambda p: p["state"]["queued"] == 1)
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("classes [")
    gate.release()
    switch.join(30)
    assert json.loads(running().json()["info"])["sd_model_name"] == "classes" and box["r"].status_code == 200
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("noise [")


def test_skip_drops_the_running_batch_and_goes_on(gated):
    client, gate = gated
    gate.release(3)  # euler, 2 steps: batch 1 takes 2 evaluations, batch 2 waits inside its 2nd step
    response = in_background(client, {"steps": 2, "seed": 5, "n_iter": 3, "sampler_name": "Euler", "prompt": "Bag",
                                      "cfg_scale": 1, "force_task_id": "task(mine)"})
    wait_for(client, lambda p: p["state"]["job_no"] == 1 and p["state"]["sampling_step"] == 1)
    task = client.post("/internal/progress", json={"id_task": "task(mine)", "id_live_preview": -1}).json()
    assert task["active"] and task["progress"] == pytest.approx(3 / 6) and task["live_preview"].startswith("data:image")
    again = client.post("/internal/progress",
                        json={"id_task": "task(mine)", "id_live_preview": task["id_live_preview"]})
    assert again.json()["live_preview"] is None  # nothing new since
    assert client.post("/sdapi/v1/skip").json() == {"skipped": True}
    gate.release()
    info = json.loads(response().json()["info"])
    assert info["all_seeds"] == [5, 7] and info["interrupted"] is False and info["task_id"] == "task(mine)"
    whole = client.post("/sdapi/v1/txt2img", json={"steps": 2, "seed": 5, "n_iter": 3, "sampler_name": "Euler",
                                                   "prompt": "Bag", "cfg_scale": 1}).json()["images"]
    assert response().json()["images"] == [whole[0], whole[2]]
    done = client.post("/internal/progress", json={"id_task": "task(mine)"}).json()
    assert (done["active"], done["queued"], done["completed"]) == (False, False, True)
    unknown = client.post("/internal/progress", json={"id_task": "task(other)"}).json()
    assert (unknown["completed"], unknown["textinfo"]) == (False, "Waiting...")


def test_a_queued_task_says_so(gated):
    client, gate = gated
    first = in_background(client, {"steps": 2, "prompt": "Bag", "force_task_id": "task(first)"})
    wait_for(client, lambda p: p["state"]["job"] == "txt2img")
    second = in_background(client, {"steps": 2, "prompt": "Bag", "force_task_id": "task(second)"})
    wait_for(client, lambda p: p["state"]["queued"] == 1)
    queued = client.post("/internal/progress", json={"id_task": "task(second)"}).json()
    assert (queued["active"], queued["queued"], queued["textinfo"]) == (False, True, "In queue: 1/1")
    gate.release()
    assert first().status_code == second().status_code == 200


@pytest.mark.parametrize("argv, words", [
    (["--models-dir", "/no/such/folder"], "--models-dir must be a folder"),
    (["--strict-names", "--port", "70000"], "--port must lie in 1..65535"),  # the flag parses
])
def test_serve_command_checks_its_new_flags(models_dir, capsys, argv, words):
    assert main(["serve", str(models_dir / "noise.safetensors"), *argv]) == 2
    assert words in capsys.readouterr().err
