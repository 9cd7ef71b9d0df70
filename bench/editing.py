"""Editing on the bundled conditional model: DDIM inversion error, img2img's faithfulness/realism curve, inpainting.

1. Inversion: Fashion-MNIST test images (class-balanced) are DDIM-inverted with their class as condition and then
   reconstructed by DDIM on the same grid, for steps x CFG weight w (Ho & Salimans' w; the web UI's scale is 1 + w);
   MSE and PSNR ([-1, 1] images, peak-to-peak 2) of the reconstructions, and FD of the reconstructions against the
   test set beside the FD of the originals themselves (the floor at that n). The remedy row inverts at w = 0 and
   reconstructs at a guided w.
2. Swap: the same inversion, then DDIM with another class (c + 5 mod 10) at w_edit: the remedy for high-CFG
   inversion (invert at w = 0, guide only the edit) against inverting at the guided w.
3. img2img "turn this shirt into a sneaker": test shirts, condition "Sneaker" at CFG w, against strength: the share
   the feature net classifies as sneakers, and the mean absolute change from the input (faithfulness).
4. Inpainting: test images with the bottom half masked, repainted unconditionally (replacement and RePaint): FD against
   the test set and the share still classified as the original class.

    python bench/editing.py [--n-invert 32] [--n-img2img 100] [--n-inpaint 100] [--out runs/editing] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from difflab.commands import BUNDLED_CONDITIONAL_MODEL
from difflab.conditioning import Condition
from difflab.data import load_fashion_mnist
from difflab.edit.img2img import MaskRequest, plan_edit
from difflab.edit.invert import from_noise, invert
from difflab.errors import run_script
from difflab.eval.report import evaluate_images
from difflab.images import to_uint8
from difflab.model import load_model
from difflab.pipelines.guidance import GuidanceRequest
from difflab.pipelines.request import Request, plan_request

SHIRT, SNEAKER = 6, 7


def balanced(data, n: int, label: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n test images: of class `label`, or i-th of class i mod 10; float64 in [-1, 1], and their labels."""
    labels = data.labels
    if label is not None:
        index = torch.nonzero(labels == label)[:n, 0]
    else:
        per_class = [torch.nonzero(labels == c)[:, 0] for c in range(10)]
        index = torch.stack([per_class[i % 10][i // 10] for i in range(n)])
    x, y = data.batch(index)
    return x.double(), y


def planned(model, n: int, label: torch.Tensor | int | None, steps: int, w: float, sampler: str = "ddim"):
    """A checked plan of n samples; a label tensor gives each sample its own class."""
    single = label if isinstance(label, int) or label is None else None
    request = Request(label=single, guidance=GuidanceRequest(cfg=w or None), sampler=sampler, steps=steps, n=n,
                      batch=64)
    plan = plan_request(request, model.denoiser, model.checkpoint.config, decode=getattr(model, "decoder", None))
    if isinstance(label, torch.Tensor):
        plan = replace(plan, cond=Condition(label))
    return plan


def psnr(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over images of 10 log10(peak-to-peak^2 / MSE), peak-to-peak 2 for [-1, 1] images."""
    mse = (x.double().clamp(-1, 1) - reference).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(4 / mse.clamp_min(1e-12))).mean())


def fd(x: torch.Tensor) -> float:
    return evaluate_images(to_uint8(x))["fd"]


def inversion(model, data, args) -> list[dict]:
    x0, labels = balanced(data, args.n_invert)
    floor = fd(x0)
    print(f"\ninversion, n = {len(x0)}; FD of the originals themselves (the floor at this n): {floor:.3f}")
    print(f"{'steps':>6}{'w inv':>7}{'w rec':>7}{'fixed pt':>9}{'MSE':>11}{'PSNR dB':>9}{'FD':>9}{'seconds':>9}",
          flush=True)
    rows = []
    runs = [(s, w, w, 0) for w in args.weights for s in args.steps if w == 0 or s in args.guided_steps]
    runs += [(s, 0.0, w, 0) for w in args.remedy_weights for s in args.guided_steps]
    runs += [(s, w, w, args.fixed_point) for w in args.remedy_weights for s in args.guided_steps]
    for steps, w_invert, w_reconstruct, fixed_point in runs:
        start = time.perf_counter()
        noise = invert(planned(model, len(x0), labels, steps, w_invert), x0, fixed_point)
        x = from_noise(planned(model, len(x0), labels, steps, w_reconstruct), noise).sample()
        mse = float((x.double().clamp(-1, 1) - x0).pow(2).mean())
        row = {"steps": steps, "w_invert": w_invert, "w_reconstruct": w_reconstruct, "fixed_point": fixed_point,
               "mse": mse,
               "psnr": psnr(x, x0), "fd": fd(x), "fd_originals": floor, "n": len(x0),
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"{steps:>6}{w_invert:>7g}{w_reconstruct:>7g}{fixed_point:>9}{mse:>11.2e}{row['psnr']:>9.2f}"
              f"{row['fd']:>9.3f}{row['seconds']:>9.1f}", flush=True)
    return rows


def swap(model, data, args) -> list[dict]:
    """The edit the remedy is for: invert test images (class c) at w_invert, then run DDIM from that noise with class
    c + 5 mod 10 at w_edit; the share the feature net puts in the new class, and the mean change from the input."""
    x0, labels = balanced(data, args.n_swap)
    target = (labels + 5) % 10
    print(f"\nswap (class c -> c + 5 mod 10) from inverted noise, n = {len(x0)}, DDIM {args.swap_steps} steps")
    print(f"{'w inv':>6}{'w edit':>7}{'target %':>9}{'mean |change|':>14}{'seconds':>9}", flush=True)
    rows = []
    for w_invert, w_edit in args.swap_pairs:
        start = time.perf_counter()
        noise = invert(planned(model, len(x0), labels, args.swap_steps, w_invert), x0)
        x = from_noise(planned(model, len(x0), target, args.swap_steps, w_edit), noise).sample()
        probs = evaluate_images(to_uint8(x), target.numpy())["accuracy"]
        row = {"w_invert": w_invert, "w_edit": w_edit, "target": probs, "n": len(x0),
               "change": float((x.double() - x0).abs().mean()), "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"{w_invert:>6g}{w_edit:>7g}{100 * probs:>9.1f}{row['change']:>14.3f}{row['seconds']:>9.1f}", flush=True)
    return rows


def img2img(model, data, args) -> list[dict]:
    shirts, _ = balanced(data, args.n_img2img, SHIRT)
    print(f"\nimg2img shirt -> sneaker, n = {len(shirts)}, DDIM {args.img2img_steps} steps (the web UI's rule: about "
          f"strength x steps run)")
    print(f"{'w':>5}{'strength':>9}{'sneaker %':>10}{'shirt %':>9}{'mean |change|':>14}{'seconds':>9}", flush=True)
    rows = []
    for w, strength in [(args.img2img_w, s) for s in args.strengths] + [(0.0, 0.8)]:
        start = time.perf_counter()
        plan = planned(model, len(shirts), SNEAKER, args.img2img_steps, w)
        x = plan_edit(plan, model, shirts, strength).sample()
        probs = evaluate_images(to_uint8(x))["class_shares"]
        row = {"w": w, "strength": strength, "sneaker": probs[SNEAKER], "shirt": probs[SHIRT],
               "change": float((x.double() - shirts).abs().mean()), "n": len(shirts),
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"{w:>5g}{strength:>9g}{100 * row['sneaker']:>10.1f}{100 * row['shirt']:>9.1f}{row['change']:>14.3f}"
              f"{row['seconds']:>9.1f}", flush=True)
    return rows


def inpainting(model, data, args) -> list[dict]:
    x0, labels = balanced(data, args.n_inpaint)
    mask = torch.zeros(x0.shape[-2:], dtype=torch.float64)
    mask[x0.shape[-2] // 2:] = 1  # the bottom half is repainted
    original = evaluate_images(to_uint8(x0), labels.numpy())
    print(f"\ninpainting of the bottom half, unconditional, n = {len(x0)}, DDIM {args.inpaint_steps} steps; "
          f"originals: FD {original['fd']:.3f}, class accuracy {100 * original['accuracy']:.1f} %")
    print(f"{'method':>22}{'FD':>9}{'class acc %':>12}{'seconds':>9}", flush=True)
    rows = []
    methods = [("replace", {}), ("repaint", {"jump_length": args.jump_length, "jump_n": args.jump_n})]
    for method, jumps in methods:
        start = time.perf_counter()
        plan = planned(model, len(x0), None, args.inpaint_steps, 0.0)
        x = plan_edit(plan, model, x0, 1.0, mask=MaskRequest(mask, method=method, **jumps)).sample()
        metrics = evaluate_images(to_uint8(x), labels.numpy())
        name = method + (f" j={args.jump_length} r={args.jump_n}" if jumps else "")
        row = {"method": name, "fd": metrics["fd"], "accuracy": metrics["accuracy"], "fd_originals": original["fd"],
               "accuracy_originals": original["accuracy"], "n": len(x0),
               "unmasked_max_change": float((x.double() - x0)[..., : x0.shape[-2] // 2, :].abs().max()),
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"{name:>22}{row['fd']:>9.3f}{100 * row['accuracy']:>12.1f}{row['seconds']:>9.1f}", flush=True)
    return rows


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]  # "" is none


def pairs(text: str) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in pair.split(":")) for pair in text.split(",")]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(BUNDLED_CONDITIONAL_MODEL))
    p.add_argument("--parts", default="invert,swap,img2img,inpaint")
    p.add_argument("--n-invert", type=int, default=32)
    p.add_argument("--steps", type=ints, default=[10, 50, 200], help="inversion steps at w = 0")
    p.add_argument("--weights", type=floats, default=[0.0, 1.0, 3.0])
    p.add_argument("--guided-steps", type=ints, default=[10, 50], help="inversion steps measured at w > 0")
    p.add_argument("--remedy-weights", type=floats, default=[3.0],
                   help="guided w of the remedy rows: inverted at w = 0, and inverted at w with fixed-point steps")
    p.add_argument("--fixed-point", type=int, default=2, help="fixed-point iterations of the last remedy rows")
    p.add_argument("--n-swap", type=int, default=20)
    p.add_argument("--swap-steps", type=int, default=20)
    p.add_argument("--swap-pairs", type=pairs, default=[(0.0, 0.0), (0.0, 3.0), (3.0, 3.0)],
                   help="w_invert:w_edit,... (default 0:0,0:3,3:3)")
    p.add_argument("--n-img2img", type=int, default=100)
    p.add_argument("--img2img-steps", type=int, default=20)
    p.add_argument("--img2img-w", type=float, default=1.0)
    p.add_argument("--strengths", type=floats, default=[0.2, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--n-inpaint", type=int, default=100)
    p.add_argument("--inpaint-steps", type=int, default=20)
    p.add_argument("--jump-length", type=int, default=5)
    p.add_argument("--jump-n", type=int, default=3)
    p.add_argument("--out", default="runs/editing")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    data = load_fashion_mnist(split="test")
    parts = {"invert": inversion, "swap": swap, "img2img": img2img, "inpaint": inpainting}
    results = {}
    for name in args.parts.split(","):
        results[name] = parts[name](model, data, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "editing.json").write_text(json.dumps({"args": vars(args), **results}, indent=1))
    print(f"\nwrote {out / 'editing.json'}")


if __name__ == "__main__":
    run_script(main)
