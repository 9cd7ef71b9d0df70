"""`difflab edit`: img2img, inpainting, DDIM inversion, and reconstruction or a swapped condition from inverted noise
(the bundled conditional model by default)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from difflab.commands import BUNDLED_CONDITIONAL_MODEL, positive_int, set_threads
from difflab.commands.guidance_flags import add_guidance_arguments, guidance_request
from difflab.commands.sample import add_sampling_arguments, request_from_args
from difflab.distributed import resolve_device
from difflab.edit.images import RESIZE_MODES, open_image, prepare_image, prepare_mask
from difflab.edit.img2img import FILLS, MaskRequest, encoder, plan_edit
from difflab.edit.inpaint import INPAINT_METHODS
from difflab.edit.invert import Inversion, from_noise, invert, load_noise, save_noise
from difflab.errors import DifflabError
from difflab.images import atomic_write, save_samples, to_uint8
from difflab.model import load_model
from difflab.pipelines.request import Request, plan_request


def image_shape(model) -> tuple[int, ...]:
    """The model's image shape (a latent model's decoded images), else its data shape."""
    return tuple(getattr(model, "image_shape", model.checkpoint.config.data_shape))


def read_images(paths: list[str], model, resize_mode: str | None) -> torch.Tensor:
    return torch.stack([prepare_image(open_image(path, path), image_shape(model), resize_mode, path)
                        for path in paths])


def write_images(x: torch.Tensor, out: str) -> None:
    """One image as a PNG of its own size (so it can be edited again), several as a grid (or an .npz)."""
    if Path(out).suffix.lower() == ".png" and len(x) == 1:
        image = Image.fromarray(to_uint8(x)[0])
        atomic_write(out, lambda f: image.save(f, format="PNG"))
    else:
        save_samples(x, out)


def add_common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--checkpoint", help="a .safetensors checkpoint or .json model manifest (default: the bundled "
                                        "conditional model)")
    add_sampling_arguments(p)
    p.add_argument("--class", dest="label", type=int, help="class index for a class-conditional model")
    p.add_argument("--prompt", help="text prompt for a text-conditional model")
    p.add_argument("--out", default=out, help=f"FILE.png (default {out}) or FILE.npz")
    add_guidance_arguments(p)


def add_start(p: argparse.ArgumentParser, strength: float | None) -> None:
    p.add_argument("--strength", type=float, required=strength is None, default=strength,
                   help="denoising strength in [0, 1]: 0 returns the image, 1 starts from pure noise"
                        + ("" if strength is None else f" (default {strength:g})"))
    p.add_argument("--exact-steps", action="store_true",
                   help="run exactly --steps steps (on a grid of steps / strength); default: about strength x steps "
                        "of a --steps grid, as the web UI")
    p.add_argument("--resize-mode", choices=RESIZE_MODES, help="how an image of another size is brought to the "
                   "model's: just (stretch), crop, fill (pad with stretched edges), latent (bilinear); default: refuse")
    p.add_argument("--n", type=positive_int("--n"), default=1, help="edits of the image, sample i with seed + i")


def register(subparsers) -> None:
    p = subparsers.add_parser("edit", help="img2img, inpainting, DDIM inversion", description=__doc__)
    edits = p.add_subparsers(dest="edit", required=True, metavar="EDIT")

    q = edits.add_parser("img2img", help="noise an image to a strength and denoise it (SDEdit), maybe with a new "
                                         "prompt or class")
    q.add_argument("image")
    add_start(q, None)
    add_common(q, "img2img.png")
    q.set_defaults(handler=run_img2img)

    q = edits.add_parser("inpaint", help="regenerate the masked region (white in MASK) of an image")
    q.add_argument("image")
    q.add_argument("mask", help="an image whose white (255) is repainted and black kept (grey: in between)")
    add_start(q, 1.0)
    q.add_argument("--mode", choices=INPAINT_METHODS, default="replace",
                   help="replace: the known region set to the noised original at every step (default); repaint: "
                        "also resample (Lugmayr et al. 2022)")
    q.add_argument("--jump-length", type=positive_int("--jump-length"), default=10, help="RePaint: levels per jump")
    q.add_argument("--jump-n", type=positive_int("--jump-n"), default=10, help="RePaint: resamplings per jump point")
    q.add_argument("--mask-blur", type=float, default=0.0, help="Gaussian blur std of the mask in pixels (the web "
                                                                 "UI's mask_blur; default 0)")
    q.add_argument("--invert-mask", action="store_true", help="repaint the black region instead")
    q.add_argument("--fill", choices=FILLS, default="original",
                   help="what the masked region starts from at strength < 1 (the web UI's inpainting_fill)")
    add_common(q, "inpaint.png")
    q.set_defaults(handler=run_inpaint)

    q = edits.add_parser("invert", help="DDIM inversion: the noise that deterministic DDIM maps to IMAGE")
    q.add_argument("images", nargs="+", metavar="IMAGE")
    q.add_argument("--resize-mode", choices=RESIZE_MODES, help="as for img2img; default: refuse another size")
    q.add_argument("--fixed-point", type=int, default=0, metavar="K",
                   help="fixed-point iterations per step towards the exact inverse of each DDIM step (default 0; "
                        "each costs one more network evaluation)")
    add_common(q, "noise.safetensors")
    q.set_defaults(handler=run_invert)

    for name, text in (("reconstruct", "DDIM from inverted noise with the condition it was inverted under"),
                       ("swap", "DDIM from inverted noise with a new --prompt or --class")):
        q = edits.add_parser(name, help=text)
        q.add_argument("noise", help="a file written by `difflab edit invert`")
        q.add_argument("--checkpoint", help="default: the model the noise was inverted with")
        q.add_argument("--class", dest="label", type=int, help="the new class" if name == "swap" else argparse.SUPPRESS)
        q.add_argument("--prompt", help="the new prompt" if name == "swap" else argparse.SUPPRESS)
        q.add_argument("--out", default=f"{name}.png")
        q.add_argument("--threads", type=int)
        add_guidance_arguments(q)
        q.set_defaults(handler=run_from_noise, swap=name == "swap")


def edit_plan(args: argparse.Namespace, model, n: int):
    device = resolve_device(args.device)
    request = request_from_args(args, model, n, label=args.label, prompt=args.prompt)
    return plan_request(request, model.denoiser.to(device), model.checkpoint.config,
                        decode=getattr(model, "decoder", None))


def finish(x: torch.Tensor, out: str, what: str, start: float) -> int:
    write_images(x, out)
    print(f"wrote {len(x)} {what} to {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def run_img2img(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    start = time.perf_counter()
    model = load_model(args.checkpoint or BUNDLED_CONDITIONAL_MODEL)
    images = read_images([args.image], model, args.resize_mode)
    edit = plan_edit(edit_plan(args, model, args.n), model, images, args.strength, exact_steps=args.exact_steps)
    return finish(edit.sample(), args.out, "edited images", start)


def run_inpaint(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    start = time.perf_counter()
    model = load_model(args.checkpoint or BUNDLED_CONDITIONAL_MODEL)
    images = read_images([args.image], model, args.resize_mode)
    mask = prepare_mask(open_image(args.mask, args.mask), *images.shape[-2:], resize_mode=args.resize_mode,
                        blur_x=args.mask_blur, blur_y=args.mask_blur, invert=args.invert_mask, field=args.mask)
    request = MaskRequest(mask, args.fill, args.mode, args.jump_length, args.jump_n)
    edit = plan_edit(edit_plan(args, model, args.n), model, images, args.strength, exact_steps=args.exact_steps,
                     mask=request)
    return finish(edit.sample(), args.out, "inpainted images", start)


def run_invert(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    start = time.perf_counter()
    if args.sampler != "ddim":
        raise DifflabError("--sampler: inversion runs DDIM backwards (eta 0); reconstruct and swap sample with DDIM")
    path = args.checkpoint or str(BUNDLED_CONDITIONAL_MODEL)
    model = load_model(path)
    x0 = encoder(model)(read_images(args.images, model, args.resize_mode).float()).double()
    plan = edit_plan(args, model, len(x0))
    if args.fixed_point < 0:
        raise DifflabError(f"--fixed-point must be >= 0, got {args.fixed_point}")
    noise = invert(plan, x0, args.fixed_point)
    save_noise(args.out, noise, Inversion(args.steps, plan.sampler.grid, args.sections, args.label, args.prompt,
                                          args.cfg, str(Path(path).resolve())))
    print(f"wrote the DDIM inversion of {len(x0)} images ({args.steps} steps, {plan.sampler.grid} grid, "
          f"cfg w {args.cfg or 0:g}) to {args.out} ({time.perf_counter() - start:.1f} s)")
    return 0


def run_from_noise(args: argparse.Namespace) -> int:
    """DDIM (eta 0) on the inversion's grid from its noise: reconstruct with its condition, or swap to a new one;
    guided by the inversion's weight w unless --cfg is given."""
    set_threads(args.threads)
    start = time.perf_counter()
    noise, inversion = load_noise(args.noise)
    if args.swap and args.label is None and args.prompt is None:
        raise DifflabError("swap needs the new condition: give --prompt TEXT or --class K")
    label, prompt = (args.label, args.prompt) if args.swap else (inversion.label, inversion.prompt)
    model = load_model(args.checkpoint or inversion.model)
    guidance = guidance_request(args, model.files.get("classifier"))
    if args.cfg is None:
        guidance = replace(guidance, cfg=inversion.cfg)
    request = Request(label=label, prompt=prompt, guidance=guidance, sampler="ddim", grid=inversion.grid,
                      sections=inversion.sections, steps=inversion.steps, n=len(noise))
    plan = plan_request(request, model.denoiser, model.checkpoint.config, decode=model.decoder)
    what = "swapped images" if args.swap else "reconstructions"
    return finish(from_noise(plan, noise).sample(), args.out, what, start)
