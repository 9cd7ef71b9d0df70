"""The one generation path: generate() from a start state and through a decode stage, sampler names of both
vocabularies, the rules of a Request in the CLI's and the web UI's words, and `difflab sample` and the server giving
the same image for the same request."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from test_serve_api import CLASSES, write_checkpoint

from difflab.cli import main
from difflab.commands import BUNDLED_CONDITIONAL_MODEL, BUNDLED_MODEL
from difflab.edit.img2img import plan_edit
from difflab.errors import DifflabError
from difflab.images import to_uint8
from difflab.pipelines.dialect import CLI, Dialect, RequestError
from difflab.pipelines.generate import generate
from difflab.pipelines.guidance import GuidanceRequest
from difflab.pipelines.request import Request, plan_request
from difflab.pipelines.samplers import SCHEDULER_NAMES, find_scheduler, resolve_sampler, split_scheduler
from difflab.pipelines.start import StrengthLevels, cut_grid, img2img_levels
from difflab.serve.app import create_app
from difflab.serve.model import load_served_model
from difflab.train.checkpoint import load_denoiser

WEB_UI = Dialect({"cfg": "cfg_scale", "sampler": "sampler_name"}, model="model m", web_ui=True)
RUN = {"sampler": "ddim", "steps": 10, "grid": "trailing"}


@pytest.fixture(scope="module")
def bundled():
    denoiser, checkpoint = load_denoiser(BUNDLED_MODEL)
    return denoiser, tuple(checkpoint.config.data_shape)


@pytest.fixture(scope="module")
def images(bundled):
    """Three samples of the bundled model: start images like its data."""
    denoiser, shape = bundled
    return generate(denoiser, shape, 3, seed=100, **RUN)


def test_cut_grid_starts_at_sigma_start_and_keeps_the_levels_below():
    sigmas = torch.tensor([80.0, 10.0, 1.0, 0.1, 0.0], dtype=torch.float64)
    assert torch.equal(cut_grid(sigmas, 5.0), torch.tensor([5.0, 1.0, 0.1, 0.0], dtype=torch.float64))
    assert torch.equal(cut_grid(sigmas, 1.0), sigmas[2:])  # a level of the grid is not repeated
    assert torch.equal(cut_grid(sigmas, 80.0), sigmas)
    for bad in (80.5, 100.0, 0.0):
        with pytest.raises(DifflabError, match="sigma_start must lie in"):
            cut_grid(sigmas, bad)


def test_img2img_levels_follow_a1111_steps_rule():
    def make(n):  # a grid of n steps: levels n, n-1, ..., 1, 0
        return torch.arange(n, -1, -1, dtype=torch.float64)

    # default: 20 steps, t_enc = int(0.5 * 20) = 10, start at grid[20 - 10 - 1] = 11 -> 11 evaluations
    half = img2img_levels(make, 20, 0.5)
    assert (half.steps, half.sigma_start) == (20, 11.0)
    assert len(cut_grid(make(half.steps), half.sigma_start)) - 1 == 11
    # exact steps: a grid of int(20 / 0.5) = 40 steps, of which exactly the last 20 run
    exact = img2img_levels(make, 20, 0.5, exact_steps=True)
    assert (exact.steps, exact.sigma_start) == (40, 20.0)
    assert len(cut_grid(make(exact.steps), exact.sigma_start)) - 1 == 20
    assert img2img_levels(make, 20, 0.999).sigma_start == 20.0  # the top level, with the input in it
    assert img2img_levels(make, 20, 1.0) == StrengthLevels(20, None)  # prior noise: txt2img
    assert not img2img_levels(make, 20, 0.0).runs  # the input untouched
    with pytest.raises(DifflabError, match="strength must lie in"):
        img2img_levels(make, 20, 1.5)


def test_a_start_at_a_low_level_stays_close_to_the_start_image(bundled, images):
    denoiser, shape = bundled
    near = generate(denoiser, shape, 3, seed=0, start=images, sigma_start=0.1, **RUN)
    far = generate(denoiser, shape, 3, seed=0, start=images, sigma_start=5.0, **RUN)
    prior = generate(denoiser, shape, 3, seed=0, **RUN)
    assert (near - images).abs().mean() < 0.05
    assert (near - images).abs().mean() < (far - images).abs().mean() < (prior - images).abs().mean()


def test_the_start_noise_comes_from_each_samples_generator(bundled, images):
    """x = start + sigma_start * eps with eps from seed + i: a start noised that way by hand and passed as already
    noised gives the same samples, and sample i depends only on seed + i, not on the batch size."""
    denoiser, shape = bundled
    sigma_start, seed = 2.0, 5
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
                         for i in range(3)])
    x = generate(denoiser, shape, 3, seed=seed, start=images, sigma_start=sigma_start, **RUN)
    by_hand = generate(denoiser, shape, 3, seed=seed, start=images.double() + sigma_start * noise,
                       sigma_start=sigma_start, start_noised=True, **RUN)
    assert torch.equal(x, by_hand)
    one_by_one = generate(denoiser, shape, 3, seed=seed, start=images, sigma_start=sigma_start, batch=1, **RUN)
    later = generate(denoiser, shape, 2, seed=seed + 1, start=images[1:], sigma_start=sigma_start, **RUN)
    # equal up to the float32 rounding of the network's batched convolutions
    torch.testing.assert_close(one_by_one, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(later, x[1:], rtol=0, atol=1e-5)
    shared = generate(denoiser, shape, 3, seed=seed, start=images[:1], sigma_start=sigma_start, **RUN)
    assert torch.equal(shared[0], x[0]) and not torch.equal(shared[1], shared[0])  # one start, fresh noise each


def test_decode_is_applied_to_the_samplers_output(bundled):
    denoiser, shape = bundled
    plain = generate(denoiser, shape, 2, seed=1, **RUN)
    decoded = generate(denoiser, shape, 2, seed=1, decode=lambda x: x[:, :, ::2, ::2] * -1, **RUN)
    assert decoded.shape == (2, 1, 14, 14) and torch.equal(decoded, -plain[:, :, ::2, ::2])


def test_a_start_is_checked(bundled, images):
    denoiser, shape = bundled
    for unpaired in ({"start": images}, {"sigma_start": 1.0}):
        with pytest.raises(DifflabError, match="start and sigma_start go together"):
            generate(denoiser, shape, 3, **unpaired, **RUN)
    with pytest.raises(DifflabError, match=r"start must be \[1 or n=3, 1, 28, 28\]"):
        generate(denoiser, shape, 3, start=images[:2], sigma_start=1.0, **RUN)


def resolved(name, grid, dialect) -> tuple[str, str, str]:
    entry = resolve_sampler(name, grid, dialect)
    return entry.name, entry.sampler, entry.grid


def test_sampler_names_of_both_vocabularies():
    # the UI's own schedule of a name under "Automatic": Karras for DPM++ 2M, Exponential for DPM++ 2M SDE
    assert resolved("DPM++ 2M", None, WEB_UI) == ("DPM++ 2M", "dpmpp_2m", "karras")
    assert resolved("DPM++ 2M SDE", None, WEB_UI) == ("DPM++ 2M SDE", "dpmpp_2m_sde", "log_snr")
    assert resolved("DPM++ 2M Karras", None, CLI) == ("DPM++ 2M", "dpmpp_2m", "karras")  # an older name: a suffix
    assert resolved("k_dpmpp_2m", "linspace", CLI) == ("DPM++ 2M", "dpmpp_2m", "linspace")  # grid given
    assert resolved("euler", None, CLI) == ("euler", "euler", "trailing")  # difflab's own names first
    assert resolved("euler", None, WEB_UI) == ("Euler", "euler", "linspace")  # the web UI's names only
    # a scheduler suffix, as the web UI's v1.9+ names and infotexts write it, in any case
    assert resolved("Euler a Karras", None, WEB_UI) == ("Euler a", "euler_ancestral", "karras")
    assert resolved("euler exponential", None, WEB_UI) == ("Euler", "euler", "log_snr")
    assert split_scheduler("DPM++ 2M SDE Karras") == ("DPM++ 2M SDE", SCHEDULER_NAMES[2])
    assert split_scheduler("DDIM") == ("DDIM", None)
    assert find_scheduler("karras", WEB_UI) is find_scheduler("Karras", WEB_UI) is find_scheduler("KARRAS", WEB_UI)
    with pytest.raises(RequestError, match="'Euler a SGMUniform' ends in scheduler 'SGM Uniform', which needs a grid"):
        resolve_sampler("Euler a SGMUniform", None, WEB_UI)
    with pytest.raises(RequestError, match=r"unknown sampler 'dpmpp_2m': sampler_name must be one of DPM\+\+ 2M, "):
        resolve_sampler("dpmpp_2m", None, WEB_UI)
    with pytest.raises(RequestError, match=r"unknown sampler 'nope': --sampler must be one of .*ddim.* or a web UI "
                                           r"name \(DPM\+\+ 2M, "):
        resolve_sampler("nope", None, CLI)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return {name: load_denoiser(write_checkpoint(root / name / "checkpoint.safetensors", classes))
            for name, classes in (("uncond", None), ("class", CLASSES))}


def test_request_rules_speak_the_callers_words(checkpoints):
    denoiser, checkpoint = checkpoints["uncond"]
    guided = Request(guidance=GuidanceRequest(cfg=6.0), sampler="Euler", steps=3)
    with pytest.raises(RequestError, match="--cfg needs a conditional model; this checkpoint is unconditional, so "
                                           "--cfg must be 0 .no guidance.; got 6") as cli:
        plan_request(guided, denoiser, checkpoint.config)
    with pytest.raises(RequestError, match="cfg_scale needs a conditional model; model m is unconditional, so "
                                           "cfg_scale must be 1 .no guidance.; got 7") as web:
        plan_request(guided, denoiser, checkpoint.config, WEB_UI)
    assert (cli.value.field, web.value.field) == ("--cfg", "cfg_scale")
    with pytest.raises(RequestError, match="steps must be <= the schedule's 100 timesteps") as steps:
        plan_request(Request(steps=500, sampler="Euler"), denoiser, checkpoint.config)
    assert steps.value.field == "--steps"

    # the web UI's clients always send prompts: what the model cannot use is dropped with a warning
    asked = Request(prompt="a coat", guidance=GuidanceRequest(negative_prompt="blur"), sampler="Euler", steps=3, n=2)
    with pytest.raises(RequestError, match="--prompt needs a text-conditional model; this checkpoint is unconditional"):
        plan_request(replace(asked, guidance=GuidanceRequest()), denoiser, checkpoint.config)
    plan = plan_request(asked, denoiser, checkpoint.config, WEB_UI)
    assert plan.warnings == ("prompt ignored: model m is unconditional", "negative_prompt ignored: model m is "
                                                                         "unconditional")
    assert plan.request.prompt is None and plan.cond is None and plan.guidance is None

    denoiser, checkpoint = checkpoints["class"]
    unguided = Request(label=1, guidance=GuidanceRequest(negative_label=0), sampler="Euler", steps=3, n=2)
    with pytest.raises(RequestError, match="--negative-class needs --cfg > 0"):
        plan_request(unguided, denoiser, checkpoint.config)
    plan = plan_request(unguided, denoiser, checkpoint.config, WEB_UI)
    assert plan.warnings == ("negative_label ignored: it acts only through guidance, with cfg_scale > 1",)
    assert plan.guidance is None and torch.equal(plan.cond.labels, torch.tensor([1, 1]))
    assert plan.class_names == CLASSES and [len(b) for b in plan.batches()] == [2]


def test_a_request_samples_on_the_levels_it_gives(tmp_path, capsys):
    path = str(write_checkpoint(tmp_path / "noise.safetensors", randomize=True))
    denoiser, checkpoint = load_denoiser(path)
    named = plan_request(Request(sampler="ddim", steps=3, grid="trailing", n=2), denoiser, checkpoint.config)
    levels = tuple(named.grid()[:-1].tolist())
    given = plan_request(Request(sampler="ddim", steps=3, sigmas=levels, n=2), denoiser, checkpoint.config)
    assert torch.equal(given.grid(), named.grid()) and torch.equal(given.sample(), named.sample())
    other = plan_request(replace(given.request, sigmas=(levels[0], levels[2] / 2, levels[2] / 4)), denoiser,
                         checkpoint.config)
    assert other.grid()[1] == levels[2] / 2 and not torch.equal(other.sample(), named.sample())  # the levels are used
    with pytest.raises(RequestError, match="--sigmas must be noise levels in strictly decreasing order") as bad:
        plan_request(replace(given.request, sigmas=levels[::-1]), denoiser, checkpoint.config)
    assert bad.value.field == "--steps"
    with pytest.raises(DifflabError, match="img2img cuts its grid at the strength's level: leave out --sigmas"):
        plan_edit(given, None, given.sample(), 0.5)

    out = tmp_path / "x.npz"
    assert main(["sample", path, "--sigmas", ",".join(map(repr, levels)), "--n", "2", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out)["images"], np.asarray(to_uint8(named.sample())))
    for flags, message in [(["--steps", "5"], "leave out --steps"), (["--grid", "karras"], "leave out --grid"),
                           (["--hires-scale", "2"], "leave out --sections and --sigmas")]:
        capsys.readouterr()
        assert main(["sample", path, "--sigmas", "1,0.5", "--n", "1", "--out", str(out), *flags]) == 2
        assert message in capsys.readouterr().err


def png_pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_sample_command_and_server_give_the_same_images(tmp_path, capsys):
    """One request, by `difflab sample` (w = 2) and by the API (cfg_scale = 1 + w): the same uint8 pixels."""
    prompt, negative, sampler, steps, seed = "a dark ankle boot", "a sneaker", "DPM++ 2M Karras", 6, 11
    out = tmp_path / "x.npz"
    assert main(["sample", "--prompt", prompt, "--negative-prompt", negative, "--cfg", "2", "--sampler", sampler,
                 "--steps", str(steps), "--seed", str(seed), "--n", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    with TestClient(create_app(load_served_model(BUNDLED_CONDITIONAL_MODEL))) as client:
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": prompt, "negative_prompt": negative, "cfg_scale": 3, "sampler_name": sampler, "steps": steps,
            "seed": seed, "batch_size": 2})
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert (info["difflab_sampler"], info["grid"], info["all_seeds"]) == ("dpmpp_2m", "karras", [seed, seed + 1])
    served = np.stack([png_pixels(image) for image in response.json()["images"]])
    sampled = np.load(out)["images"]
    assert served.dtype == sampled.dtype == np.uint8 and served.shape == sampled.shape == (2, 28, 28)
    assert np.array_equal(served, sampled)
    assert len(np.unique(served)) > 10  # an image, not a blank
