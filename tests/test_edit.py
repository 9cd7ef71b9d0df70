"""Editing: img2img's ends and start level, inpainting's known region, RePaint's path, DDIM inversion on the exact
Gaussian denoiser, the web UI's mask blur / fill / resize modes, the noise file and the `difflab edit` commands."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image
from samplers_exact import GaussianDenoiser
from test_serve_api import write_checkpoint

from difflab.cli import main
from difflab.commands import BUNDLED_CONDITIONAL_MODEL
from difflab.edit.images import blur, fill, image_array, overlay_mask, prepare_image, prepare_mask, resize
from difflab.edit.img2img import MaskRequest, plan_edit
from difflab.edit.inpaint import Inpainting, repaint_path, sampler_mask
from difflab.edit.invert import Inversion, ddim_invert, load_noise, save_noise
from difflab.errors import DifflabError
from difflab.grids import make_grid
from difflab.model import load_model
from difflab.pipelines.dialect import RequestError
from difflab.pipelines.generate import generate
from difflab.pipelines.request import Request, plan_request
from difflab.samplers.ancestral import sample_ddim

STEPS = 6


@pytest.fixture(scope="module")
def model():
    return load_model(BUNDLED_CONDITIONAL_MODEL)


def plan_of(model, n=2, steps=STEPS, sampler="ddim", **fields):
    request = Request(label=7, sampler=sampler, steps=steps, n=n, seed=3, **fields)
    return plan_request(request, model.denoiser, model.checkpoint.config)


@pytest.fixture(scope="module")
def images(model):
    """Two T-shirts of the model's own, as start images."""
    request = Request(label=0, sampler="ddim", steps=STEPS, n=2, seed=40)
    return plan_request(request, model.denoiser, model.checkpoint.config).sample().double()


def test_strength_0_returns_the_input_and_1_is_txt2img_from_the_same_seed(model, images):
    plan = plan_of(model)
    assert torch.equal(plan_edit(plan, model, images, 0.0).sample(), images.float())
    assert torch.equal(plan_edit(plan, model, images, 1.0).sample(), plan.sample())


def test_the_start_level_is_on_the_grid_and_steps_follow_the_web_ui(model, images):
    plan = plan_of(model, steps=10)
    grid = make_grid(model.denoiser.schedule, 10, plan.sampler.grid)
    seen = []
    edit = plan_edit(plan, model, images, 0.5)
    edit.sample(callback=lambda b, step: seen.append(step.sigma) if b == 0 else None)
    t_enc = int(0.5 * 10)
    assert edit.plan.request.sigma_start == float(grid[10 - t_enc - 1]) == seen[0]
    assert len(seen) == t_enc + 1  # about strength x steps evaluations
    exact = plan_edit(plan, model, images, 0.5, exact_steps=True)
    seen.clear()
    exact.sample(callback=lambda b, step: seen.append(step.sigma) if b == 0 else None)
    assert exact.plan.request.steps == 20 and len(seen) == 10  # exactly `steps` of a grid of steps / strength


@pytest.mark.parametrize("method, fill_mode", [("replace", "original"), ("repaint", "fill"),
                                               ("replace", "latent_noise"), ("repaint", "latent_nothing")])
def test_inpainting_leaves_the_unmasked_region_pixel_exact(model, images, method, fill_mode):
    mask = torch.zeros(28, 28, dtype=torch.float64)
    mask[:, :12] = 1
    mask = torch.from_numpy(blur(mask.numpy(), 1.5, 1.5))  # a soft border, as mask_blur makes
    request = MaskRequest(mask, fill=fill_mode, method=method, jump_length=2, jump_n=2)
    x = plan_edit(plan_of(model), model, images, 0.9, mask=request).sample()
    known = overlay_mask(mask) == 0
    assert known.sum() > 200
    assert torch.equal(x[..., known], images.float()[..., known])
    assert (x[..., ~known] - images.float()[..., ~known]).abs().mean() > 0.02  # the masked region was redrawn


def test_replacement_keeps_a_deterministic_trajectory_on_the_noised_original(model, images):
    """With DDIM (eta 0) from a start at a level, the sampler's state in the known region is x0 + sigma eps at every
    level it reports."""
    mask = torch.zeros(1, 1, 28, 28, dtype=torch.float64)
    mask[..., :10, :] = 1
    plan = plan_of(model, n=1)
    noise = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    inpaint = Inpainting(images[:1], mask)
    states = []
    generate(model.denoiser, (1, 28, 28), 1, sampler="ddim", steps=STEPS, grid=plan.sampler.grid, seed=3,
             cond=plan.cond, start=images[:1], sigma_start=5.0, inpaint=inpaint,
             callback=lambda b, step: states.append((step.sigma, step.x)))
    assert len(states) >= 3
    for sigma, x in states:
        expected = images[:1] + sigma * noise
        torch.testing.assert_close(x[..., 10:, :], expected[..., 10:, :], rtol=0, atol=1e-9)


class HalfSizeLatents:
    """A stand-in latent model: the tiny 16x16 test U-Net samples "latents" that are 32x32 images pooled 2x2."""

    def __init__(self, path):
        self.inner = load_model(path)
        self.denoiser, self.checkpoint = self.inner.denoiser, self.inner.checkpoint

    def encode(self, images):
        return torch.nn.functional.avg_pool2d(images, 2)

    def decoder(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_a_latent_model_inpaints_on_its_grid_and_composites_in_pixels(tmp_path):
    latent = HalfSizeLatents(write_checkpoint(tmp_path / "tiny.safetensors", randomize=True))
    request = Request(sampler="ddim", steps=4, n=2, seed=1)
    plan = plan_request(request, latent.denoiser, latent.checkpoint.config, decode=latent.decoder)
    images = torch.linspace(-1, 1, 32, dtype=torch.float64).repeat(1, 1, 32, 1)  # [1, 1, 32, 32]
    mask = torch.zeros(32, 32, dtype=torch.float64)
    mask[5:9, 21:27] = 1  # not aligned to the 2x2 latent cells
    edit = plan_edit(plan, latent, images, 1.0, mask=MaskRequest(mask))
    assert edit.plan.request.inpaint.mask.shape == (1, 1, 16, 16)
    assert edit.plan.request.inpaint.mask.sum() == 3 * 4  # cells 2..4 x 10..13 cover rows 5..8, columns 21..26
    x, originals = edit.sample(), images.float().expand(2, -1, -1, -1)
    assert x.shape == (2, 1, 32, 32) and torch.equal(x[..., mask == 0], originals[..., mask == 0])
    assert not torch.equal(x[..., mask == 1], originals[..., mask == 1])


def test_repaint_path_and_sampler_refusals():
    # 6 steps (t = 6 - index), jump points t = 3 and 1, each passed jump_n = 2 times: back up 2 levels once
    assert repaint_path(6, 2, 2) == [0, 1, 2, 3, 1, 2, 3, 4, 5, 3, 4, 5, 6]
    assert repaint_path(4, 10, 10) == [0, 1, 2, 3, 4]  # jumps longer than the grid: plain descent
    mask = torch.ones(1, 1, 4, 4)
    with pytest.raises(DifflabError, match="inpainting cannot use sampler svgd"):
        Inpainting(torch.zeros(1, 1, 4, 4), mask).check("svgd")
    with pytest.raises(DifflabError, match="RePaint runs the sampler on segments.*rk45"):
        Inpainting(torch.zeros(1, 1, 4, 4), mask, "repaint").check("rk45")
    Inpainting(torch.zeros(1, 1, 4, 4), mask).check("rk45")  # replacement works with any ODE solver
    with pytest.raises(DifflabError, match="jump length and count must be >= 1"):
        Inpainting(torch.zeros(1, 1, 4, 4), mask, "repaint", jump_length=0)


def test_a_latent_grids_mask_covers_every_masked_pixel():
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., 3, 5] = 1
    mask[..., 6, 0] = 0.4  # rounds to known
    latent = sampler_mask(mask, (4, 4, 4))
    assert latent.shape == (1, 1, 4, 4) and latent.sum() == 1 and latent[0, 0, 1, 2] == 1
    assert torch.equal(sampler_mask(mask, (1, 8, 8)), (mask >= 0.5).double())


def gaussian_reconstruction_error(steps: int) -> float:
    denoiser = GaussianDenoiser(0.3, 0.25)
    x0 = 0.3 + 0.5 * torch.randn(512, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = torch.cat([torch.logspace(math.log10(80), math.log10(0.01), steps, dtype=torch.float64),
                        torch.zeros(1, dtype=torch.float64)])
    noise = ddim_invert(denoiser, x0, sigmas)
    return float((sample_ddim(denoiser, noise, sigmas) - x0).abs().max())


def test_ddim_inversion_then_reconstruction_recovers_x0_to_discretisation_error():
    errors = [gaussian_reconstruction_error(n) for n in (16, 64, 256, 1024)]
    assert errors[-1] < 0.05
    for coarse, fine in itertools.pairwise(errors):
        assert fine < coarse / 2.5  # first order: about 4x smaller for 4x the steps


def test_fixed_point_iterations_invert_each_ddim_step_exactly():
    denoiser = GaussianDenoiser(0.3, 0.25)
    x0 = 0.3 + 0.5 * torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigmas = torch.cat([torch.logspace(math.log10(80), math.log10(0.01), 8, dtype=torch.float64),
                        torch.zeros(1, dtype=torch.float64)])
    errors = [float((sample_ddim(denoiser, ddim_invert(denoiser, x0, sigmas, k), sigmas) - x0).abs().max())
              for k in (0, 2, 200)]
    assert errors[2] < 1e-9 < errors[1] < errors[0]


def test_the_noise_file_keeps_the_noise_and_how_it_was_made(tmp_path):
    noise = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    inversion = Inversion(50, "trailing", None, 3, None, 1.0, "/m.safetensors")
    save_noise(tmp_path / "n.safetensors", noise, inversion)
    loaded, meta = load_noise(tmp_path / "n.safetensors")
    assert torch.equal(loaded, noise) and meta == inversion
    (tmp_path / "bad").write_bytes(b"nope")
    with pytest.raises(DifflabError, match="not a noise file"):
        load_noise(tmp_path / "bad")


def test_mask_blur_is_the_web_uis_gaussian_and_inversion_flips_it():
    mask = np.zeros((28, 28), np.float32)
    mask[10:18, 10:18] = 1
    sigma = 2.0
    radius = int(4 * sigma + 0.5)  # cv2's kernel: 2 int(4 sigma + 0.5) + 1 taps
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    row = np.convolve(np.pad(mask[14], radius, mode="reflect"), taps, mode="valid")
    np.testing.assert_allclose(blur(mask, sigma, 0)[14], row, atol=1e-6)
    image = Image.fromarray((mask * 255).astype(np.uint8))
    plain = prepare_mask(image, 28, 28, resize_mode=None)
    assert torch.equal(plain, torch.from_numpy(mask).double())
    assert torch.equal(prepare_mask(image, 28, 28, resize_mode=None, invert=True), 1 - plain)
    assert torch.equal(overlay_mask(torch.tensor([0.0, 0.25, 0.5, 0.9])), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(RequestError, match="mask blur must be >= 0"):
        prepare_mask(image, 28, 28, resize_mode=None, blur_x=-1)


def test_fill_keeps_the_known_pixels_and_fills_from_their_colours():
    image = torch.full((1, 8, 8), 0.5, dtype=torch.float64)
    image[:, :, 4:] = -0.5
    mask = torch.zeros(8, 8, dtype=torch.float64)
    mask[2:6, 2:6] = 1
    filled = fill(image, mask)
    assert torch.equal(filled[:, mask == 0], image[:, mask == 0])
    assert filled[0, 3, 2] > filled[0, 3, 5]  # the left side fills lighter, as its surroundings
    assert filled[:, mask == 1].min() >= -0.5 and filled[:, mask == 1].max() <= 0.5


def test_images_are_refused_or_resized_as_asked():
    grey = Image.fromarray(np.tile(np.arange(56, dtype=np.uint8)[None], (28, 1)))  # 56 wide, 28 high
    with pytest.raises(RequestError, match="is 56x28, the model's images are 28x28"):
        prepare_image(grey, (1, 28, 28), None, "IMAGE")
    for mode in ("just", "crop", "fill", "latent"):
        assert prepare_image(grey, (1, 28, 28), mode, "IMAGE").shape == (1, 28, 28)
    wide = np.arange(8, dtype=np.float32)[None, :, None].repeat(4, 0)  # [4, 8, 1]
    assert resize(wide, 4, 4, "crop", "x")[0, :, 0].tolist() == [2, 3, 4, 5]  # the centre of the wider image
    filled = resize(wide, 16, 8, "fill", "x")  # fits 8 wide x 4 high, the rest stretched from the edge rows
    assert filled.shape == (16, 8, 1) and (filled[0] == filled[6]).all()
    colour = Image.fromarray(np.dstack([np.zeros((4, 4), np.uint8), np.full((4, 4), 9, np.uint8),
                                        np.zeros((4, 4), np.uint8)]))
    with pytest.raises(RequestError, match="colour image and the model makes one-channel"):
        image_array(colour, 1, "IMAGE")
    assert image_array(colour.convert("L").convert("RGB"), 1, "IMAGE").shape == (4, 4, 1)  # grey stored as RGB
    with pytest.raises(RequestError, match="transparent pixels"):
        image_array(Image.new("RGBA", (4, 4)), 1, "IMAGE")


def test_edit_commands_end_to_end(tmp_path, capsys, images):
    source = tmp_path / "in.png"
    Image.fromarray(((images[0, 0].numpy() + 1) * 127.5).round().astype(np.uint8)).save(source)
    mask = np.zeros((28, 28), np.uint8)
    mask[14:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    fast = ["--steps", "4", "--threads", "1"]
    assert main(["edit", "img2img", str(source), "--strength", "0.6", "--class", "7", "--out",
                 str(tmp_path / "a.png"), *fast]) == 0
    assert main(["edit", "inpaint", str(source), str(tmp_path / "mask.png"), "--mode", "repaint", "--jump-length",
                 "2", "--jump-n", "2", "--mask-blur", "1", "--out", str(tmp_path / "b.png"), *fast]) == 0
    result = np.asarray(Image.open(tmp_path / "b.png"))
    original = np.asarray(Image.open(source))
    assert result.shape == (28, 28) and (result[:11] == original[:11]).all()
    assert main(["edit", "invert", str(source), "--class", "0", "--out", str(tmp_path / "n.safetensors"),
                 *fast]) == 0
    assert main(["edit", "reconstruct", str(tmp_path / "n.safetensors"), "--out", str(tmp_path / "r.png")]) == 0
    assert main(["edit", "swap", str(tmp_path / "n.safetensors"), "--class", "7", "--cfg", "1", "--out",
                 str(tmp_path / "s.png")]) == 0
    reconstructed = np.asarray(Image.open(tmp_path / "r.png")).astype(float)
    swapped = np.asarray(Image.open(tmp_path / "s.png")).astype(float)
    assert np.abs(reconstructed - original).mean() < np.abs(swapped - original).mean()
    assert main(["edit", "swap", str(tmp_path / "n.safetensors")]) == 2
    assert "swap needs the new condition" in capsys.readouterr().err
    assert main(["edit", "img2img", str(tmp_path / "mask.png"), "--strength", "2", *fast]) == 2
    assert "strength must lie in [0, 1]" in capsys.readouterr().err
