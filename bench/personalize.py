"""Personalization bench: DreamBooth (whole network, LoRA), LoRA alone and textual inversion, each trained for the
same wall-clock time on 5 images of one bag the base model rarely draws.

The subject: among the Fashion-MNIST test bags that the feature net calls bags, the one least like the base model's
own "a bag" samples (lowest mean cosine similarity in the feature net's space), and its 4 nearest test bags. Each
method then trains on those 5 images under "a sks bag" (textual inversion: "a <sks-bag>") for --minutes, and is scored
on samples drawn with DDIM, --steps steps, CFG weight --cfg (the server's default), sample i from seed i:

- subject fidelity: mean cosine similarity of the feature net's features between the "a [V] bag" samples and the
  5 subject images (as DreamBooth's DINO score);
- prompt fidelity: the share of "a [V] bag" samples the feature net calls a bag;
- prior drift: the share of plain "a bag" samples called a bag, and their FD to the 1,000 test bags, after training
  against before (the base model's row);
- trainable parameters and the size of the file written.

    python bench/personalize.py [--minutes 4] [--n 100] [--methods dreambooth,...] [--out runs/personalize]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from difflab.adapters.embedding import load_embedding, use_embedding
from difflab.adapters.lora import LoraConfig, attach
from difflab.adapters.train import Recipe, subject_data, train_embedding, train_personalized
from difflab.adapters.use import read_lora
from difflab.commands import BUNDLED_CONDITIONAL_MODEL
from difflab.data import load_fashion_mnist
from difflab.errors import run_script
from difflab.eval.features import bundled_feature_net, extract
from difflab.eval.frechet import frechet_distance_of
from difflab.images import to_uint8
from difflab.model import load_model
from difflab.pipelines.guidance import GuidanceRequest
from difflab.pipelines.request import Request, plan_request
from difflab.text.encoder import text_encoder
from difflab.train.checkpoint import sha256_file

BAG = 8  # Fashion-MNIST's class index of "Bag"
EVAL_SEED = 10_000  # the scored samples' seeds start here, away from the class images' (0, 1, ...)
CLASS_PROMPT, INSTANCE_PROMPT, TOKEN = "a bag", "a sks bag", "<sks-bag>"
# name -> (how it trains, learning rate)
METHODS = {
    "dreambooth": dict(lora=None, prior=True, lr=1e-4),
    "dreambooth-no-prior": dict(lora=None, prior=False, lr=1e-4),
    "dreambooth-lora4": dict(lora=4, prior=True, lr=1e-3),
    "lora4-no-prior": dict(lora=4, prior=False, lr=1e-3),
    "textual-inversion": dict(lora=None, prior=False, lr=5e-3, embedding=True),
}


def sample(model, prompt: str, args) -> torch.Tensor:
    request = Request(prompt=prompt, guidance=GuidanceRequest(cfg=args.cfg), sampler="ddim", steps=args.steps,
                      n=args.n, seed=EVAL_SEED, batch=args.n)
    return plan_request(request, model.denoiser, model.checkpoint.config).sample()


def pick_subject(base_bags: torch.Tensor, out: Path) -> Path:
    """Write the 5 subject images to out/subject: the test bag least like the base model's bags, and its 4
    nearest test bags (all called bags by the feature net)."""
    net, _ = bundled_feature_net()
    test = load_fashion_mnist(None, "test")
    bags = test.data[test.labels == BAG]
    real = extract(net, bags)
    called = real.probs.argmax(1) == BAG
    real_f = F.normalize(real.features, dim=1)
    drawn = F.normalize(extract(net, to_uint8(base_bags)).features, dim=1)
    likeness = (real_f @ drawn.T).mean(1).masked_fill(~called, float("inf"))
    seed = int(likeness.argmin())
    nearest = (real_f @ real_f[seed]).masked_fill(~called, -float("inf")).topk(5).indices
    folder = out / "subject"
    folder.mkdir(parents=True, exist_ok=True)
    for i in nearest.tolist():
        Image.fromarray(bags[i, 0].numpy()).save(folder / f"bag_{i:04d}.png")
    return folder


def scores(instance: torch.Tensor, plain: torch.Tensor, subject: torch.Tensor, test_bags) -> dict:
    net, _ = bundled_feature_net()
    inst, plain_f = extract(net, to_uint8(instance)), extract(net, to_uint8(plain))
    subject_f = F.normalize(extract(net, subject).features, dim=1)
    return {
        "subject_fidelity": float((F.normalize(inst.features, dim=1) @ subject_f.T).mean()),
        "instance_bag_accuracy": float((inst.probs.argmax(1) == BAG).double().mean()),
        "class_bag_accuracy": float((plain_f.probs.argmax(1) == BAG).double().mean()),
        "class_fd": frechet_distance_of(plain_f.features, test_bags.features),
    }


def evaluate(model, instance_prompt: str, subject: torch.Tensor, test_bags, args) -> dict:
    start = time.perf_counter()
    row = scores(sample(model, instance_prompt, args), sample(model, CLASS_PROMPT, args), subject, test_bags)
    return {**row, "eval_seconds": time.perf_counter() - start}


def run_method(name: str, spec: dict, subject_dir: Path, class_dir: Path, subject: torch.Tensor, test_bags,
               args) -> dict:
    out = args.out / name
    recipe = Recipe(steps=None, minutes=args.minutes, lr=spec["lr"], batch=args.batch, device="cpu")
    data = subject_data(str(subject_dir))
    if spec.get("embedding"):
        result = train_embedding(args.base, data, TOKEN, "bag", out, recipe=recipe, progress=False)
    else:
        lora = None if spec["lora"] is None else LoraConfig(rank=spec["lora"], alpha=float(spec["lora"]))
        prior = dict(class_prompt=CLASS_PROMPT, num_class_images=args.class_images, class_dir=class_dir)
        result = train_personalized(args.base, data, INSTANCE_PROMPT, out, lora=lora, recipe=recipe, progress=False,
                                    **(prior if spec["prior"] else {}))
    model = load_model(result.path if spec["lora"] is None and not spec.get("embedding") else args.base)
    prompt = INSTANCE_PROMPT
    if spec.get("embedding"):
        loaded = load_embedding(result.path)
        use_embedding(text_encoder(), loaded.token, loaded.vectors)
        prompt = f"a {TOKEN}"
    elif spec["lora"] is not None:
        net = model.denoiser.net
        attach(net, read_lora(result.path, net, sha256_file(args.base)), name)
    row = evaluate(model, prompt, subject, test_bags, args)
    return {**row, "steps": result.step, "train_seconds": result.seconds, "trainable": result.trainable,
            "trainable_share": result.trainable / result.total, "file_bytes": result.path.stat().st_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=BUNDLED_CONDITIONAL_MODEL)
    p.add_argument("--minutes", type=float, default=4.0, help="training wall-clock per method (default 4)")
    p.add_argument("--n", type=int, default=100, help="samples per prompt for the scores (default 100)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance weight w (default 1)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--class-images", type=int, default=100)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/personalize"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    base = load_model(args.base)
    net, _ = bundled_feature_net()
    test = load_fashion_mnist(None, "test")
    test_bags = extract(net, test.data[test.labels == BAG])
    base_bags = sample(base, CLASS_PROMPT, args)
    subject_dir = pick_subject(base_bags, args.out)
    subject = subject_data(str(subject_dir)).data
    if "base" not in results:
        row = scores(sample(base, INSTANCE_PROMPT, args), base_bags, subject, test_bags)
        results["base"] = {**row, "trainable": 0, "trainable_share": 0.0, "file_bytes": 0}
    class_dir = args.out / "class_images"
    for name in args.methods.split(","):
        if name in results:
            continue
        print(f"== {name}: {args.minutes:g} min", flush=True)
        results[name] = run_method(name, METHODS[name], subject_dir, class_dir, subject, test_bags, args)
        results_path.write_text(json.dumps({**results, "_settings": {k: str(v) for k, v in vars(args).items()}},
                                           indent=2))
        print(json.dumps(results[name]), flush=True)
    results.pop("_settings", None)
    results_path.write_text(json.dumps({**results, "_settings": {k: str(v) for k, v in vars(args).items()}},
                                       indent=2))
    print_table(results)


def print_table(results: dict) -> None:
    print("| method | steps | trainable params | file | subject fidelity | 'a [V] bag' is a bag | 'a bag' is a bag | "
          "'a bag' FD to test bags |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        if name.startswith("_"):
            continue
        trainable = f"{r['trainable']:,} ({100 * r['trainable_share']:.2f}%)" if r["trainable"] else "-"
        size = f"{r['file_bytes'] / 1024:.0f} kB" if r["file_bytes"] else "-"
        print(f"| {name} | {r.get('steps', '-')} | {trainable} | {size} | {r['subject_fidelity']:.3f} | "
              f"{r['instance_bag_accuracy']:.3f} | {r['class_bag_accuracy']:.3f} | {r['class_fd']:.1f} |")


if __name__ == "__main__":
    run_script(main)
