"""The web UI's sampler settings (difflab.serve.settings): eta_ddim, eta_ancestral and UniPC's, set for the server by
POST /sdapi/v1/options or per request by override_settings, reach the UI's sampler names, as the UI applies them."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_serve_api import png, txt2img, write_checkpoint

from difflab.images import to_uint8
from difflab.pipelines.generate import generate
from difflab.serve.app import create_app
from difflab.serve.model import load_served_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_served_model(write_checkpoint(tmp_path_factory.mktemp("settings") / "m.safetensors", randomize=True))


@pytest.fixture
def client(model):
    with TestClient(create_app(model)) as client:  # a fresh server per test: POST /options changes it
        yield client


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(png(image)) for image in result["images"]])


def expected(model, sampler: str, grid: str, **options) -> np.ndarray:
    """What the pipeline draws for txt2img's defaults here (2 images from seed 7, 6 steps)."""
    return to_uint8(generate(model.denoiser, model.config.data_shape, 2, sampler=sampler, steps=6, grid=grid, seed=7,
                             batch=2, options=options))


def test_unipc_settings_per_request_and_for_the_server(client, model):
    body = {"sampler_name": "UniPC", "steps": 6, "batch_size": 2}
    default, default_info = txt2img(client, **body)
    override, info = txt2img(client, **body, override_settings={"uni_pc_order": 2, "uni_pc_variant": "bh2"})
    assert info["sampler_options"] == {"order": 2, "solver_type": "bh2"} and info["grid"] == "linspace"
    assert np.array_equal(pixels(override), expected(model, "unipc", "linspace", order=2, solver_type="bh2"))
    assert np.array_equal(pixels(default), expected(model, "unipc", "linspace", order=3, solver_type="bh1"))
    assert not np.array_equal(pixels(default), pixels(override))
    # settings that differ from the UI's defaults are written under their OptionInfo infotext names
    assert "Sampler: UniPC, CFG scale: 1, UniPC order: 2, UniPC variant: bh2, Seed: 7," in info["infotexts"][0]
    assert "UniPC" not in default_info["infotexts"][0].replace("Sampler: UniPC", "")
    assert info["warnings"] == []  # honoured, not listed as ignored
    # the same settings for the server; a request's override_settings win over them
    response = client.post("/sdapi/v1/options", json={"uni_pc_order": 2, "uni_pc_variant": "bh2"})
    assert response.status_code == 200 and "x-difflab-ignored" not in response.headers
    assert client.get("/sdapi/v1/options").json()["uni_pc_order"] == 2
    assert np.array_equal(pixels(txt2img(client, **body)[0]), pixels(override))
    assert np.array_equal(pixels(txt2img(client, **body, override_settings={"uni_pc_order": 3,
                                                                               "uni_pc_variant": "bh1"})[0]),
                          pixels(default))


def test_unipc_skip_type_is_its_grid_under_the_automatic_schedule(client, model):
    body = {"sampler_name": "UniPC", "steps": 6, "batch_size": 2, "override_settings": {"uni_pc_skip_type": "logSNR"}}
    result, info = txt2img(client, **body)
    assert info["grid"] == "log_snr" and info["scheduler"] == "Automatic"
    assert np.array_equal(pixels(result), expected(model, "unipc", "log_snr", order=3, solver_type="bh1"))
    assert "UniPC skip type: logSNR," in info["infotexts"][0] and "Schedule type" not in info["infotexts"][0]
    assert txt2img(client, **body, scheduler="Karras")[1]["grid"] == "karras"  # a schedule chosen by name wins


def test_unipc_settings_difflab_cannot_run_run_the_nearest_with_a_warning(client):
    _, info = txt2img(client, sampler_name="UniPC", steps=6, override_settings={
        "uni_pc_order": 5, "uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "time_quadratic",
        "uni_pc_lower_order_final": False})
    assert info["sampler_options"] == {"order": 3, "solver_type": "bh1"} and info["grid"] == "linspace"
    assert [w.split(":")[0] for w in info["warnings"]] == [
        "uni_pc_order 5", "uni_pc_variant vary_coeff", "uni_pc_skip_type time_quadratic",
        "uni_pc_lower_order_final false"]
    # other samplers do not use them, and say nothing of them, as the UI
    assert txt2img(client, sampler_name="Euler", override_settings={"uni_pc_order": 5})[1]["warnings"] == []


@pytest.mark.parametrize("setting, sampler, key", [("eta_ancestral", "Euler a", "Eta"),
                                                   ("eta_ddim", "DDIM", "Eta DDIM")])
def test_eta_settings_are_the_eta_of_a_request_that_gives_none(client, setting, sampler, key):
    body = {"sampler_name": sampler, "steps": 6, "batch_size": 2}
    by_setting, info = txt2img(client, **body, override_settings={setting: 0.5})
    by_body = txt2img(client, **body, eta=0.5)[0]
    assert info["sampler_options"]["eta"] == 0.5 and f", {key}: 0.5," in info["infotexts"][0]
    assert np.array_equal(pixels(by_setting), pixels(by_body))
    assert not np.array_equal(pixels(by_setting), pixels(txt2img(client, **body)[0]))
    # the body's eta wins over the setting (Sampler.initialize: p.eta, else the setting)
    assert txt2img(client, **body, eta=0.25, override_settings={setting: 0.5})[1]["sampler_options"]["eta"] == 0.25
    client.post("/sdapi/v1/options", json={setting: 0.5})
    assert np.array_equal(pixels(txt2img(client, **body)[0]), pixels(by_body))


def test_the_hires_pass_runs_under_the_settings_too(client):
    """An Euler first pass is the same under any UniPC settings; a UniPC second pass is not."""
    body = {"sampler_name": "Euler", "steps": 4, "enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.5,
            "hr_sampler_name": "UniPC"}
    first, info = txt2img(client, **body, override_settings={"uni_pc_order": 1})
    assert "Hires sampler: UniPC" in info["infotexts"][0] and info["warnings"] == []
    second = txt2img(client, **body, override_settings={"uni_pc_order": 2})[0]
    assert not np.array_equal(pixels(first), pixels(second))
    euler = {**body, "hr_sampler_name": None}  # an Euler second pass: the settings change nothing
    assert np.array_equal(pixels(txt2img(client, **euler, override_settings={"uni_pc_order": 1})[0]),
                          pixels(txt2img(client, **euler)[0]))


@pytest.mark.parametrize("settings, field", [
    ({"uni_pc_order": 0}, "uni_pc_order"), ({"uni_pc_order": 2.5}, "uni_pc_order"),
    ({"uni_pc_order": True}, "uni_pc_order"), ({"uni_pc_variant": "bh3"}, "uni_pc_variant"),
    ({"uni_pc_skip_type": "karras"}, "uni_pc_skip_type"), ({"uni_pc_lower_order_final": "yes"},
                                                           "uni_pc_lower_order_final"),
    ({"eta_ddim": -1}, "eta_ddim"), ({"eta_ancestral": "1"}, "eta_ancestral")])
def test_bad_settings_are_refused_naming_the_field(client, settings, field):
    response = client.post("/sdapi/v1/txt2img", json={"steps": 2, "override_settings": settings})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == f"override_settings.{field}"
    before = client.get("/sdapi/v1/options").json()
    response = client.post("/sdapi/v1/options", json={**settings, "live_previews_enable": False})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == field
    assert client.get("/sdapi/v1/options").json() == before  # nothing of a refused body is applied
