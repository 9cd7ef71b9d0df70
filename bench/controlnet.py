"""ControlNet condition fidelity: the annotator applied to the generated image against the control image.

Control maps come from N Fashion-MNIST test images (the first N, N/10 per class); each is paired with a
training-style caption of its class as the text prompt, and generated through the pipeline (plan_request with a
ControlUnit per class group, DDIM, CFG weight w, mode balanced unless told). Reported per control scale:
  fidelity  silhouette: IoU of the silhouettes; canny / scribble: edge F1 with a 1-pixel tolerance (precision = share
            of generated edge pixels within one pixel of a control edge, recall the converse); sobel: F1 of the maps
            thresholded at 0.25 with the same tolerance; lowres: MSE of the 4x4 block means (maps in [0, 1])
  accuracy  the share of samples the feature net puts in the prompt's class
  FD        against the Fashion-MNIST test set, in the feature net's space, at this N (biased upward at small N:
            compare it with the base model's at the same N and prompts, scale 0)
With several --controlnet files (e.g. snapshots of one run) it reports fidelity against training steps at
--step-scale. Writes JSON and prints a Markdown table.

    python bench/controlnet.py --controlnet runs/cn/controlnet.safetensors [--scales 0,0.5,1,2] [--n 500]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from difflab.annotators import annotate
from difflab.commands import BUNDLED_CONDITIONAL_MODEL
from difflab.data import load_dataset
from difflab.data.captions import Captioner
from difflab.errors import run_script
from difflab.eval.features import bundled_feature_net, extract, reference_features
from difflab.eval.frechet import frechet_distance_of
from difflab.images import to_uint8
from difflab.pipelines.control import ControlUnit
from difflab.pipelines.guidance import GuidanceRequest
from difflab.pipelines.request import Request, plan_request
from difflab.train.checkpoint import load_denoiser
from difflab.train.controlnet import load_controlnet


def near(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixels of binary map a within one pixel (3x3) of b's."""
    return a * (F.max_pool2d(b, 3, stride=1, padding=1) > 0)


def edge_f1(generated: torch.Tensor, control: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """[B] F1 of binary edge maps with a one-pixel tolerance, or none (1 where both are empty)."""
    found, wanted = generated.flatten(1).sum(1), control.flatten(1).sum(1)
    hits = near if tolerance else torch.mul
    precision = hits(generated, control).flatten(1).sum(1) / found.clamp(min=1)
    recall = hits(control, generated).flatten(1).sum(1) / wanted.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return torch.where((found == 0) & (wanted == 0), torch.ones_like(f1), f1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    union = torch.maximum(a, b).flatten(1).sum(1)
    return torch.where(union > 0, torch.minimum(a, b).flatten(1).sum(1) / union.clamp(min=1), torch.ones_like(union))


def fidelity(kind: str, generated_images: torch.Tensor, control: torch.Tensor) -> tuple[str, torch.Tensor]:
    """(metric name, [B] values) of the annotator on generated images [-1, 1] against the control maps."""
    mapped = annotate(kind, generated_images)
    if kind == "silhouette":
        return "IoU", iou(mapped, control)
    if kind in ("canny", "scribble"):
        return "edge F1", edge_f1(mapped, control)
    if kind == "sobel":
        return "edge F1 (>0.25)", edge_f1((mapped > 0.25).float(), (control > 0.25).float())
    if kind == "lowres":
        blocks = lambda m: F.avg_pool2d(m, 4, ceil_mode=True)
        return "MSE (4x4)", (blocks(mapped) - blocks(control)).pow(2).flatten(1).mean(1)
    raise ValueError(kind)


def class_prompts(seed: int = 0) -> list[str]:
    """One training-style caption per class (drawn once with a fixed seed)."""
    test = load_dataset("fashion-mnist", "test")
    captioner = Captioner.for_dataset(test)
    labels = torch.arange(test.num_classes)
    index = torch.stack([torch.nonzero(test.labels == c)[0, 0] for c in labels])
    picks = captioner.sample(index, labels, torch.Generator().manual_seed(seed))
    return [captioner.captions[int(i)] for i in picks]


def measure(x: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, kind: str, scale: float) -> dict:
    control = annotate(kind, images)
    metric, values = fidelity(kind, x, control)
    features = extract(bundled_feature_net()[0], to_uint8(x))
    reference = reference_features()[0]
    exact = {}
    if kind in ("canny", "scribble"):  # the same F1 without tolerance: pixel-exact edges
        exact = {"exact_f1": float(edge_f1(annotate(kind, x), control, tolerance=0).mean())}
    return {"scale": scale, "metric": metric, "fidelity": float(values.mean()), **exact,
            "accuracy": float((features.probs.argmax(1) == labels).double().mean()),
            "fd": frechet_distance_of(features.features, reference.features), "x": x}


def run_scale(denoiser, config, net, images, labels, prompts, kind, scale, args) -> dict:
    """Samples for every class group at one scale, and their metrics."""
    if scale == 0 and args.scale0_from:  # the base's samples of an earlier run with the same N, prompts and seeds
        saved = torch.from_numpy(np.load(args.scale0_from)).float()[:, None] / 127.5 - 1
        return measure(saved, images, labels, kind, scale)
    outputs = []
    for c, prompt in enumerate(prompts):
        rows = torch.nonzero(labels == c)[:, 0]
        if len(rows) == 0:
            continue
        units = () if net is None else (ControlUnit(net, annotate(kind, images[rows]), scale, mode=args.mode),)
        request = Request(prompt=prompt, guidance=GuidanceRequest(cfg=args.cfg) if args.cfg > 0 else GuidanceRequest(),
                          sampler="ddim", steps=args.steps, n=len(rows), seed=args.seed + int(rows[0]),
                          batch=args.batch, controls=units)
        outputs.append((rows, plan_request(request, denoiser, config).sample()))
    x = torch.empty_like(images)
    for rows, samples in outputs:
        x[rows] = samples
    return measure(x, images, labels, kind, scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controlnet", nargs="+", required=True, help="ControlNet file(s); several: a steps curve")
    parser.add_argument("--base", default=str(BUNDLED_CONDITIONAL_MODEL))
    parser.add_argument("--scales", default="0,0.5,1,2")
    parser.add_argument("--step-scale", type=float, default=1.0, help="the scale of the steps curve")
    parser.add_argument("--n", type=int, default=500, help="test images (and samples per scale)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=1.0, help="CFG weight w (cfg_scale 1 + w)")
    parser.add_argument("--mode", default="balanced", choices=["balanced", "prompt", "controlnet"])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scale0-from", help="samples_scale0.npy of an earlier run with the same --n, --steps, --cfg "
                                              "and --seed: scale 0 (the base alone) is not sampled again")
    parser.add_argument("--out", default="runs/bench_controlnet")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    denoiser, checkpoint = load_denoiser(args.base)
    test = load_dataset("fashion-mnist", "test")
    per_class = args.n // test.num_classes
    index = torch.cat([torch.nonzero(test.labels == c)[:per_class, 0] for c in range(test.num_classes)])
    images, labels = test.batch(index)
    prompts = class_prompts(args.seed)
    nets = [load_controlnet(path) for path in args.controlnet]
    kind = nets[-1][0].config.control
    report = {"n": len(index), "steps": args.steps, "cfg": args.cfg, "mode": args.mode, "control": kind,
              "prompts": prompts, "scales": [], "training": []}
    start = time.perf_counter()
    final, final_checkpoint = nets[-1]
    for scale in (float(s) for s in args.scales.split(",")):
        row = run_scale(denoiser, checkpoint.config, final if scale > 0 else None, images, labels, prompts, kind,
                        scale, args)
        np.save(out / f"samples_scale{scale:g}.npy", to_uint8(row.pop("x")))
        report["scales"].append(row)
        print(f"scale {scale:g}: {row['metric']} {row['fidelity']:.3f}, accuracy {row['accuracy']:.3f}, "
              f"FD {row['fd']:.2f} ({time.perf_counter() - start:.0f} s)", flush=True)
    for net, net_checkpoint in nets[:-1] if len(nets) > 1 else []:
        row = run_scale(denoiser, checkpoint.config, net, images, labels, prompts, kind, args.step_scale, args)
        row.pop("x")
        report["training"].append({"step": net_checkpoint.step, **row})
        print(f"step {net_checkpoint.step}: {row['metric']} {row['fidelity']:.3f}, FD {row['fd']:.2f}", flush=True)
    report["final_step"] = final_checkpoint.step
    report["seconds"] = time.perf_counter() - start
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"\n{kind} ControlNet (step {final_checkpoint.step}), N = {report['n']}, DDIM {args.steps}, w = {args.cfg}, "
          f"mode {args.mode}\n")
    print(f"| scale | {report['scales'][0]['metric']} | class accuracy | FD (N = {report['n']}) |\n|---|---|---|---|")
    for row in report["scales"]:
        print(f"| {row['scale']:g} | {row['fidelity']:.3f} | {row['accuracy']:.3f} | {row['fd']:.2f} |")


if __name__ == "__main__":
    run_script(main)
