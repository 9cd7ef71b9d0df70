"""The hires fix (A1111 enable_hr: upscale, then img2img at a strength) and the refiner (a second denoiser past
refiner_switch_at), both on the one generation path."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from cascade_models import tiny_config, tiny_denoiser, write_tiny
from test_training import image_config

from difflab.cli import main
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.images import to_uint8
from difflab.lowres import upsample
from difflab.pipelines.generate import generate
from difflab.denoiser import Denoiser
from difflab.pipelines.hires import (Hires, HiresSize, check_second_model, hires_size, plan_hires,
                                     run_hires)
from difflab.pipelines.refiner import Refined, completed_fraction
from difflab.pipelines.request import Request, plan_request
from difflab.pipelines.start import img2img_levels
from difflab.samplers.common import StepInfo
from difflab.train.checkpoint import load_checkpoint, sha256_file
from difflab.train.trainer import Trainer

RUN = {"sampler": "euler", "steps": 6, "grid": "trailing"}


@pytest.fixture(scope="module")
def model():
    config = tiny_config(8, channel_mult=(1, 2, 2))  # halves twice: runs at multiples of 4
    return config, tiny_denoiser(config, 3)


def plan_of(model, **fields):
    config, denoiser = model
    return plan_request(Request(**{"n": 2, "seed": 11, **RUN, **fields}), denoiser, config)


def test_target_size_follows_a1111():
    assert hires_size(8, 12, Hires(scale=1.5)) == HiresSize((12, 18), (12, 18))  # int(side * hr_scale)
    assert hires_size(8, 12, Hires(resize_x=24)) == HiresSize((16, 24), (16, 24))  # the other side keeps the ratio
    assert hires_size(8, 12, Hires(resize_y=16)) == HiresSize((16, 24), (16, 24))
    # both: cover the target, then crop the overhang (A1111 truncate_x / truncate_y)
    assert hires_size(8, 8, Hires(resize_x=16, resize_y=12)) == HiresSize((16, 16), (12, 16))
    assert hires_size(8, 8, Hires(resize_x=12, resize_y=16)) == HiresSize((16, 16), (16, 12))


@pytest.mark.parametrize("strength", [0.3, 0.5, 0.75])
def test_hires_strength_maps_to_the_start_level_as_img2img(model, strength):
    config, denoiser = model
    plan = plan_of(model)
    second, _ = plan_hires(plan, config, Hires(scale=2, strength=strength, steps=10))
    levels = img2img_levels(lambda k: make_grid(denoiser.schedule, k, "trailing"), 10, strength)
    assert (second.request.steps, second.request.sigma_start) == (levels.steps, levels.sigma_start)
    assert second.shape == (1, 16, 16)
    # and the second pass is img2img from the upscaled first pass: the same generate() call
    out = run_hires(plan, config, Hires(scale=2, strength=strength, steps=10))
    assert torch.equal(out.first_pass, plan.sample())
    assert torch.equal(out.upscaled, upsample(out.first_pass, (16, 16), "bilinear"))
    img2img = generate(denoiser, (1, 16, 16), 2, seed=11, sampler="euler", steps=levels.steps, grid="trailing",
                       start=out.upscaled, sigma_start=levels.sigma_start)
    assert torch.equal(out.samples, img2img)


def test_hires_strength_ends(model):
    config, denoiser = model
    plan = plan_of(model)
    untouched = run_hires(plan, config, Hires(scale=2, strength=0.0, upscaler="nearest"))
    assert torch.equal(untouched.samples, untouched.first_pass.repeat_interleave(2, -1).repeat_interleave(2, -2))
    full = run_hires(plan, config, Hires(scale=2, strength=1.0))  # txt2img at the larger size, the same seeds
    assert torch.equal(full.samples, generate(denoiser, (1, 16, 16), 2, seed=11, **RUN))


def test_hires_second_pass_sampler_and_grid(model):
    """hr_sampler_name / hr_scheduler: the second pass is img2img from the same upscaled first pass, run by another
    sampler (with its own grid and default options unless given) or on another grid (the first pass's options)."""
    config, denoiser = model
    plan = plan_of(model, sampler="ddim", grid="trailing", options={"eta": 0.5})
    same = run_hires(plan, config, Hires(scale=2, strength=0.6, steps=5))
    for hires, run in ((Hires(scale=2, strength=0.6, steps=5, sampler="heun"), {"sampler": "heun"}),
                       (Hires(scale=2, strength=0.6, steps=5, sampler="heun", grid="karras"),
                        {"sampler": "heun", "grid": "karras"}),
                       (Hires(scale=2, strength=0.6, steps=5, grid="karras"),
                        {"sampler": "ddim", "grid": "karras", "options": {"eta": 0.5}})):
        out = run_hires(plan, config, hires)
        assert torch.equal(out.first_pass, same.first_pass) and torch.equal(out.upscaled, same.upscaled)
        second, _ = plan_hires(plan_of(model, **{"grid": None, **run}), config, Hires(scale=2, strength=0.6, steps=5))
        expected = replace(second, request=replace(second.request, start=out.upscaled)).sample()
        assert torch.equal(out.samples, expected) and not torch.equal(out.samples, same.samples)
    # a second pass that names the first pass's sampler and grid, with its options, is the plain hires fix
    again = run_hires(plan, config, Hires(scale=2, strength=0.6, steps=5, sampler="ddim", grid="trailing",
                                          options={"eta": 0.5}))
    assert torch.equal(again.samples, same.samples)


def test_hires_second_pass_condition(model):
    """hr_prompt / hr_negative_prompt: the second pass is img2img from the same upscaled first pass under another
    condition (here class 2 for class 0), as a plan with that condition would run it."""
    config, _ = model
    plan = plan_of(model, label=0)
    same = run_hires(plan, config, Hires(scale=2, strength=0.6, steps=5))
    out = run_hires(plan, config, Hires(scale=2, strength=0.6, steps=5, condition={"label": 2}))
    assert torch.equal(out.upscaled, same.upscaled)
    second, _ = plan_hires(plan_of(model, label=2), config, Hires(scale=2, strength=0.6, steps=5))
    expected = replace(second, request=replace(second.request, start=out.upscaled)).sample()
    assert torch.equal(out.samples, expected) and not torch.equal(out.samples, same.samples)


class Seen(Denoiser):
    """A denoiser that notes the image sizes it is asked about."""

    def __init__(self, inner: Denoiser, sizes: set):
        super().__init__(inner.net, inner.precond, inner.learned_variance)
        self.sizes = sizes

    def with_variance(self, x, sigma, cond=None):
        self.sizes.add(tuple(x.shape[-2:]))
        return super().with_variance(x, sigma, cond)


def test_hires_second_pass_model(model):
    """--hires-model (A1111 hr_checkpoint_name): the second pass, and only it, runs on another model, as img2img of
    the upscaled first pass with that model; a refiner takes over the low-noise end of both passes."""
    config, denoiser = model
    other = tiny_denoiser(config, 9)
    hires = Hires(scale=2, strength=0.6, steps=5)
    plain = run_hires(plan_of(model), config, hires)
    assert torch.equal(run_hires(plan_of(model), config, hires, model=(tiny_denoiser(config, 3), config)).samples,
                       plain.samples)  # the same weights again: the plain hires fix
    first, second = set(), set()
    plan = plan_request(Request(n=2, seed=11, **RUN), Seen(denoiser, first), config)
    out = run_hires(plan, config, hires, model=(Seen(other, second), config))
    assert (first, second) == ({(8, 8)}, {(16, 16)})
    assert torch.equal(out.first_pass, plain.first_pass) and not torch.equal(out.samples, plain.samples)
    levels = img2img_levels(lambda k: make_grid(other.schedule, k, "trailing"), 5, 0.6)
    img2img = generate(other, (1, 16, 16), 2, seed=11, sampler="euler", steps=levels.steps, grid="trailing",
                       start=out.upscaled, sigma_start=levels.sigma_start)
    assert torch.equal(out.samples, img2img)
    refiner = tiny_denoiser(config, 5)
    refined = run_hires(replace(plan_of(model), denoiser=Refined(denoiser, refiner, 0.5)), config, hires,
                        model=(other, config))
    assert torch.equal(refined.samples, generate(Refined(other, refiner, 0.5), (1, 16, 16), 2, seed=11,
                                                 sampler="euler", steps=levels.steps, grid="trailing",
                                                 start=refined.upscaled, sigma_start=levels.sigma_start))
    with pytest.raises(DifflabError, match="--hires-model does not accept the request's class condition"):
        check_second_model(config, tiny_config(8, classes=None), frozenset({"class"}))
    with pytest.raises(DifflabError, match="--hires-model makes 3-channel samples, the model 1-channel"):
        check_second_model(config, replace(config, data_shape=(3, 8, 8)), frozenset())


def test_hires_refuses_a_size_the_model_cannot_run_at(model):
    config, _ = model
    with pytest.raises(DifflabError, match="both sides must be multiples of 4"):
        plan_hires(plan_of(model), config, Hires(scale=1.25))  # 10x10
    dit = replace(config, network=replace_dit())
    with pytest.raises(DifflabError, match="only a convolutional network"):
        plan_hires(plan_of(model), dit, Hires(scale=2))
    with pytest.raises(DifflabError, match="hires denoising strength must lie in"):
        Hires(strength=1.5)
    with pytest.raises(DifflabError, match="leave out --sections"):
        plan_hires(plan_of(model, sampler="ddim", grid="respaced", sections="3,3"), config, Hires())


def replace_dit():
    from difflab.nets.dit import DiTConfig

    return DiTConfig()


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "ddpm", "euler_ancestral"])
def test_a_refiner_equal_to_the_base_reproduces_its_trajectory(model, sampler):
    config, denoiser = model
    same = tiny_denoiser(config, 3)  # another copy of the same weights
    run = dict(seed=4, sampler=sampler, steps=8, grid="trailing")
    steps: dict[str, list[StepInfo]] = {"base": [], "refined": []}
    base = generate(denoiser, (1, 8, 8), 3, callback=lambda _, s: steps["base"].append(s), **run)
    refined = generate(Refined(denoiser, same, 0.5), (1, 8, 8), 3, callback=lambda _, s: steps["refined"].append(s),
                       **run)
    assert torch.equal(base, refined)
    assert all(torch.equal(a.x, b.x) for a, b in zip(steps["base"], steps["refined"]))


def test_a_refiner_takes_the_levels_past_the_switch(model):
    config, denoiser = model
    other = tiny_denoiser(config, 9)
    sigmas = make_grid(denoiser.schedule, 10, "trailing")[:-1]
    fraction = completed_fraction(denoiser.schedule, sigmas)
    assert torch.allclose(fraction, torch.arange(10, dtype=torch.float64) / 10)  # trailing: step i is i / 10 done
    seen: list[tuple[float, bool]] = []
    refiner = Refined(denoiser, other, 0.7)
    for sigma in sigmas:
        x = torch.randn(2, 1, 8, 8)
        level = torch.full((2,), float(sigma))
        seen.append(torch.equal(refiner(x, level), other(x, level)))
        assert seen[-1] != torch.equal(refiner(x, level), denoiser(x, level))
    assert seen == [False] * 7 + [True] * 3  # the last 30 % of the steps
    rows = torch.tensor([float(sigmas[0]), float(sigmas[-1])])  # rows on both sides of the switch
    x = torch.randn(2, 1, 8, 8)
    mixed = refiner(x, rows)
    assert torch.equal(mixed[0], denoiser(x, rows)[0]) and torch.equal(mixed[1], other(x, rows)[1])
    with pytest.raises(DifflabError, match="must lie in"):
        Refined(denoiser, other, 1.5)


def test_a_refiner_trains_only_on_the_low_noise_levels(tmp_path):
    """train.max_timestep (difflab train --max-timestep): t ~ U{0..max_timestep-1}, and bad values are refused."""
    trainer = Trainer(image_config(tmp_path, steps=1, max_timestep=50), tmp_path / "refiner", progress=False)
    levels = torch.cat([trainer.objective.draw(torch.arange(8), torch.zeros(8, 1, 28, 28), None,
                                               torch.Generator().manual_seed(seed))["level"] for seed in range(50)])
    assert levels.max() == 49 and levels.min() == 0 and len(levels.unique()) == 50
    trainer.run()
    assert load_checkpoint(tmp_path / "refiner" / "checkpoint.safetensors").config.train.max_timestep == 50
    for train, words in (({"max_timestep": 0}, "must be >= 1"), ({"max_timestep": 1001}, "<= the schedule's 1000"),
                         ({"max_timestep": 50, "loss": "vlb"}, "goes with loss simple or hybrid")):
        with pytest.raises(DifflabError, match=words):
            image_config(tmp_path, **train)


def test_a_multistep_history_carries_across_the_switch(model):
    """DPM++ 2M's first refiner step uses the base model's last x0_hat: the switch is inside the one run."""
    config, denoiser = model
    other = tiny_denoiser(config, 9)
    run = dict(seed=4, sampler="dpmpp_2m", steps=8, grid="trailing")
    switched = generate(Refined(denoiser, other, 0.5), (1, 8, 8), 2, **run)  # steps 4..7 are the refiner's
    assert not torch.equal(switched, generate(denoiser, (1, 8, 8), 2, **run))
    # restarting the history at the switch would be a second run of the refiner from the base's state there
    states = []
    generate(denoiser, (1, 8, 8), 2, callback=lambda _, s: states.append(s.x), **run)
    sigmas = make_grid(denoiser.schedule, 8, "trailing")
    restarted = generate(other, (1, 8, 8), 2, start=states[3], sigma_start=float(sigmas[4]), start_noised=True,
                         **run)
    assert not torch.allclose(switched, restarted)


def test_sample_hires_and_refiner_commands(tmp_path, model, capsys):
    config, denoiser = model
    ckpt, refiner = write_tiny(tmp_path / "m.safetensors", config, 3), write_tiny(tmp_path / "r.safetensors", config, 9)
    out = tmp_path / "x.npz"
    assert main(["sample", str(ckpt), "--n", "2", "--seed", "11", "--sampler", "euler", "--steps", "6",
                 "--hires-scale", "2", "--hires-strength", "0.5", "--hires-steps", "4", "--out", str(out)]) == 0
    expected = run_hires(plan_of(model), config, Hires(scale=2, strength=0.5, steps=4)).samples
    assert np.array_equal(np.load(out)["images"], to_uint8(expected))
    assert main(["sample", str(ckpt), "--n", "2", "--seed", "11", "--sampler", "euler", "--steps", "6",
                 "--refiner", str(refiner), "--refiner-switch-at", "0.5", "--out", str(out)]) == 0
    refined = generate(Refined(denoiser, tiny_denoiser(config, 9), 0.5), (1, 8, 8), 2, seed=11, **{**RUN})
    assert np.array_equal(np.load(out)["images"], to_uint8(refined))
    assert main(["sample", str(ckpt), "--n", "2", "--seed", "11", "--sampler", "euler", "--steps", "6",
                 "--hires-scale", "2", "--hires-strength", "0.5", "--hires-sampler", "heun", "--hires-grid", "karras",
                 "--out", str(out)]) == 0
    expected = run_hires(plan_of(model), config, Hires(scale=2, strength=0.5, sampler="heun", grid="karras")).samples
    assert np.array_equal(np.load(out)["images"], to_uint8(expected))
    assert main(["sample", str(ckpt), "--n", "2", "--seed", "11", "--sampler", "euler", "--steps", "6",
                 "--hires-scale", "2", "--hires-strength", "0.5", "--hires-model", str(refiner), "--out",
                 str(out)]) == 0
    expected = run_hires(plan_of(model), config, Hires(scale=2, strength=0.5), model=(tiny_denoiser(config, 9),
                                                                                     config)).samples
    assert np.array_equal(np.load(out)["images"], to_uint8(expected))
    capsys.readouterr()
    assert main(["sample", str(ckpt), "--n", "1", "--hires-model", str(refiner), "--out", str(out)]) != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--hires-model goes with --hires-scale or --hires-resize-x/y")
    assert main(["sample", str(ckpt), "--n", "1", "--hires-scale", "1.25", "--out", str(out)]) != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("so both sides must be multiples of 4")
    assert main(["sample", str(ckpt), "--n", "1", "--hires-grid", "karras", "--out", str(out)]) != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--hires-grid goes with --hires-scale or --hires-resize-x/y")
    assert main(["sample", str(ckpt), "--n", "1", "--hires-scale", "2", "--hires-sampler", "nope", "--out",
                 str(out)]) != 0
    assert "unknown sampler 'nope': --hires-sampler must be one of" in capsys.readouterr().err


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server on a tiny 16x16 model (halving once) with a second one, a refiner, in its models dir."""
    from fastapi.testclient import TestClient
    from test_serve_api import write_checkpoint

    from difflab.serve.app import create_app
    from difflab.serve.catalog import Catalog
    from difflab.serve.model import load_served_model

    root = tmp_path_factory.mktemp("hires")
    path = write_checkpoint(root / "base.safetensors", randomize=True)
    write_tiny(root / "refiner.safetensors", tiny_config(16, classes=None), 9)  # other weights, the same images
    model = load_served_model(path)
    with TestClient(create_app(model, catalog=Catalog(model, root))) as client:
        yield client, path


def post(client, **body):
    return client.post("/sdapi/v1/txt2img", json={"steps": 4, "seed": 3, "sampler_name": "Euler", "batch_size": 2,
                                                  **body})


def test_api_hires_fix_answers_at_the_target_size_from_the_pipeline(served):
    import json

    client, path = served
    response = post(client, enable_hr=True, hr_scale=2, denoising_strength=0.5, hr_second_pass_steps=3,
                    hr_upscaler="Latent (nearest)")
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert (info["width"], info["height"], info["warnings"]) == (32, 32, [])
    assert "Denoising strength: 0.5, Hires upscale: 2, Hires steps: 3, Hires upscaler: Latent (nearest)" in \
        info["infotexts"][0]
    from difflab.model import load_model

    model = load_model(path)
    plan = plan_request(Request(n=2, seed=3, sampler="Euler", steps=4), model.denoiser, model.checkpoint.config)
    expected = run_hires(plan, model.checkpoint.config, Hires(2, strength=0.5, steps=3, upscaler="nearest")).samples
    assert np.array_equal(pixels(response.json()), to_uint8(expected))
    response = post(client, enable_hr=True, hr_scale=2, denoising_strength=0.5, hr_second_pass_steps=3,
                    hr_upscaler="Latent (bicubic antialiased)")
    expected = run_hires(plan, model.checkpoint.config, Hires(2, strength=0.5, steps=3,
                                                              upscaler="bicubic-antialiased")).samples
    assert np.array_equal(pixels(response.json()), to_uint8(expected))


def test_api_hires_sampler_and_scheduler(served):
    """hr_sampler_name and hr_scheduler run the second pass as sampler_name and scheduler would (the body's sampler
    options, where that sampler takes them), written as "Hires sampler" and "Hires schedule type" where they differ
    from the first pass's, as the UI writes them."""
    import json

    from difflab.model import load_model

    client, path = served
    hires = {"enable_hr": True, "denoising_strength": 0.5, "hr_second_pass_steps": 3, "hr_upscaler": "Latent"}
    model = load_model(path)
    config = model.checkpoint.config
    plan = plan_request(Request(n=2, seed=3, sampler="Euler", steps=4), model.denoiser, config)
    response = post(client, **hires, hr_sampler_name="DDIM", hr_scheduler="Karras", eta=0.3)
    info = json.loads(response.json()["info"])
    assert "Denoising strength: 0.5, Hires sampler: DDIM, Hires schedule type: Karras, Hires upscale: 2," in \
        info["infotexts"][0]
    assert info["warnings"] == ["eta ignored: sampler 'Euler' does not use it"]  # DDIM takes it
    expected = run_hires(plan, config, Hires(2, strength=0.5, steps=3, sampler="DDIM", grid="karras",
                                             options={"eta": 0.3})).samples
    assert np.array_equal(pixels(response.json()), to_uint8(expected))
    # the UI's "Use same ..." and nulls are the first pass's: the plain hires fix, nothing written
    plain = post(client, **hires)
    same = post(client, **hires, hr_sampler_name="Use same sampler", hr_scheduler="Use same scheduler")
    assert np.array_equal(pixels(same.json()), pixels(plain.json()))
    assert "Hires sampler" not in json.loads(same.json()["info"])["infotexts"][0]
    # a scheduler alone keeps the sampler; an unknown sampler falls back to DPM++ 2M with a warning naming the field
    info = json.loads(post(client, **hires, hr_scheduler="exponential").json()["info"])
    assert "Hires schedule type: Exponential," in info["infotexts"][0] and "Hires sampler" not in info["infotexts"][0]
    info = json.loads(post(client, **hires, hr_sampler_name="Nope").json()["info"])
    assert "Hires sampler: DPM++ 2M, Hires schedule type: Karras," in info["infotexts"][0]
    assert info["warnings"][0].startswith("unknown sampler 'Nope': hr_sampler_name must be one of")


def test_api_hires_checkpoint(served, served_classes):
    """hr_checkpoint_name runs the second pass on another checkpoint of the server's, as --hires-model does, and is
    written as "Hires checkpoint" (the UI's short title: file stem and short hash) before the hires sampler; null, ""
    and "Use same checkpoint" are the first pass's; a name the server lacks, or a model that cannot take the request,
    is a 422 naming the field."""
    import json

    from difflab.model import load_model

    client, path = served
    hires = {"enable_hr": True, "denoising_strength": 0.5, "hr_second_pass_steps": 3, "hr_upscaler": "Latent"}
    response = post(client, **hires, hr_checkpoint_name="refiner", hr_sampler_name="DDIM")
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    other = load_model(path.with_name("refiner.safetensors"))
    short_hash = sha256_file(path.with_name("refiner.safetensors"))[:10]
    assert f"Denoising strength: 0.5, Hires checkpoint: refiner [{short_hash}], Hires sampler: DDIM," in \
        info["infotexts"][0] and info["warnings"] == []
    model = load_model(path)
    plan = plan_request(Request(n=2, seed=3, sampler="Euler", steps=4), model.denoiser, model.checkpoint.config)
    expected = run_hires(plan, model.checkpoint.config, Hires(2, strength=0.5, steps=3, sampler="DDIM"),
                         model=(other.denoiser, other.checkpoint.config)).samples
    assert np.array_equal(pixels(response.json()), to_uint8(expected))
    plain = post(client, **hires).json()
    assert not np.array_equal(pixels(response.json()), pixels(plain))
    for same in (None, "", "Use same checkpoint"):
        answer = post(client, **hires, hr_checkpoint_name=same).json()
        assert np.array_equal(pixels(answer), pixels(plain))
        assert "Hires checkpoint" not in json.loads(answer["info"])["infotexts"][0]
    assert "Hires checkpoint" not in json.loads(post(client, hr_checkpoint_name="refiner").json()["info"])[
        "infotexts"][0]  # without enable_hr there is no second pass
    bad = post(client, **hires, hr_checkpoint_name="nope")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "hr_checkpoint_name"
    bad = post(served_classes[0], **hires, prompt="Coat", hr_checkpoint_name="plain")  # unconditional
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "hr_checkpoint_name"
    assert "hr_checkpoint_name does not accept the request's class condition" in bad.text


@pytest.fixture(scope="module")
def served_classes(tmp_path_factory):
    """A server on a tiny 16x16 class-conditional model, every weight random, with an unconditional one beside it."""
    from fastapi.testclient import TestClient

    from difflab.serve.app import create_app
    from difflab.serve.catalog import Catalog
    from difflab.serve.model import load_served_model

    classes = ("Coat", "Bag", "Sneaker")
    root = tmp_path_factory.mktemp("hires_classes")
    path = write_tiny(root / "classes.safetensors", tiny_config(16, classes=classes), 5)
    write_tiny(root / "plain.safetensors", tiny_config(16, classes=None), 9)
    model = load_served_model(path)
    with TestClient(create_app(model, catalog=Catalog(model, root))) as client:
        yield client, path


def test_api_hires_prompt_and_negative_prompt(served_classes, served):
    """hr_prompt and hr_negative_prompt condition the second pass as prompt and negative_prompt do the first, written
    as "Hires prompt" / "Hires negative prompt" where they differ; "" or the same text is the first pass's."""
    import json

    from difflab.model import load_model
    from difflab.pipelines.guidance import GuidanceRequest

    client, path = served_classes
    hires = {"enable_hr": True, "denoising_strength": 0.5, "hr_second_pass_steps": 3, "prompt": "Coat",
             "cfg_scale": 3, "negative_prompt": "Bag"}
    response = post(client, **hires, hr_prompt="Sneaker", hr_negative_prompt="Coat")
    info = json.loads(response.json()["info"])
    assert "Denoising strength: 0.5, Hires prompt: Sneaker, Hires negative prompt: Coat, Hires upscale: 2," in \
        info["infotexts"][0] and info["warnings"] == []
    model = load_model(path)
    config = model.checkpoint.config
    plan = plan_request(Request(n=2, seed=3, sampler="Euler", steps=4, label=0,
                                guidance=GuidanceRequest(cfg=2.0, negative_label=1)), model.denoiser, config)
    second = {"label": 2, "prompt": None, "guidance": GuidanceRequest(cfg=2.0, negative_label=0)}
    expected = run_hires(plan, config, Hires(2, strength=0.5, steps=3, condition=second)).samples
    assert np.array_equal(pixels(response.json()), to_uint8(expected))
    plain = post(client, **hires)
    for same in ({"hr_prompt": "Coat", "hr_negative_prompt": "Bag"}, {"hr_prompt": "", "hr_negative_prompt": ""}):
        answer = post(client, **hires, **same).json()
        assert np.array_equal(pixels(answer), pixels(plain.json()))
        assert "Hires prompt" not in json.loads(answer["info"])["infotexts"][0]
    # the first pass's text with a LoRA tag (as clients copy the prompt) asks for nothing: the tag is the prompt's
    tagged = post(client, **{**hires, "prompt": "<lora:x:1>Coat"}, hr_prompt="<lora:x:1>Coat").json()
    assert np.array_equal(pixels(tagged), pixels(plain.json()))
    assert json.loads(tagged["info"])["warnings"] == ["Lora not found: x"]
    info = json.loads(post(client, **hires, hr_prompt="<lora:x:1>Bag").json()["info"])
    assert 'Hires prompt: "<lora:x:1>Bag",' in info["infotexts"][0]  # quoted, as the UI quotes a value with a colon
    assert info["warnings"] == ["hr_prompt's <lora:...> tags ignored: the prompt's LoRAs apply to both passes"]
    info = json.loads(post(client, **{**hires, "cfg_scale": 1}, hr_negative_prompt="Coat").json()["info"])
    assert "hr_negative_prompt ignored: nothing is guided (cfg_scale 1)" in info["warnings"]
    bad = post(client, **hires, hr_prompt="Hat")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "hr_prompt"
    info = json.loads(post(served[0], enable_hr=True, hr_prompt="Coat").json()["info"])
    assert info["warnings"] == ["hr_prompt ignored: model base is unconditional"]


def test_api_refiner_equal_to_the_model_changes_nothing(served):
    import json

    client, _ = served
    plain = post(client).json()
    same = post(client, refiner_checkpoint="base", refiner_switch_at=0.5).json()
    assert np.array_equal(pixels(same), pixels(plain))
    assert "Refiner: base, Refiner switch at: 0.5" in json.loads(same["info"])["infotexts"][0]
    other = post(client, refiner_checkpoint="refiner", refiner_switch_at=0.5).json()
    assert not np.array_equal(pixels(other), pixels(plain))


def pixels(answer) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in answer["images"]])


@pytest.mark.parametrize("body, field, words", [
    ({"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler", "with enable_hr, hr_upscaler must be one of"),
    ({"enable_hr": True, "hr_scale": 1.1}, "hr_scale", "both sides must be multiples of 2"),  # 17x17
    ({"enable_hr": True, "hr_scale": 0}, "hr_scale", "greater than 0"),
    ({"enable_hr": True, "denoising_strength": 1.5}, "denoising_strength", "1"),
    ({"enable_hr": True, "width": 32}, "enable_hr", "samples the first pass at the model's size"),
    ({"enable_hr": True, "hr_second_pass_steps": -1}, "hr_second_pass_steps", "0"),
    ({"refiner_switch_at": 0.5}, "refiner_switch_at", "goes with refiner_checkpoint"),
    ({"refiner_checkpoint": "nothing"}, "refiner_checkpoint", "unknown checkpoint 'nothing'"),
    ({"refiner_checkpoint": "base", "refiner_switch_at": 2}, "refiner_switch_at", "1"),
])
def test_api_stage_fields_are_validated(served, body, field, words):
    client, _ = served
    response = post(client, **body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert words in answer["detail"] and [e["field"] for e in answer["errors"]] == [field]
