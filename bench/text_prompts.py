"""Text prompts the model never saw: does a text-conditional model draw the class the prompt names?

For each prompt (phrasings absent from the training captions, e.g. "some jeans" for trousers) it draws N samples
with DDIM and classifier-free guidance weight w, classifies them with the evaluation feature net and reports the
share predicted as the intended class. A few training-style captions are measured beside them for reference.
Prints a table, writes JSON and a grid of the first 8 samples per prompt.

    python bench/text_prompts.py [CKPT] [--n 100] [--cfg 3] [--steps 25] [--out text_prompts]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from difflab.commands import BUNDLED_CONDITIONAL_MODEL
from difflab.conditioning import Condition
from difflab.data import load_dataset
from difflab.data.captions import Captioner
from difflab.errors import run_script
from difflab.eval.features import bundled_feature_net, extract
from difflab.eval.plots import plot_sample_grids
from difflab.guidance import Guidance
from difflab.images import to_uint8
from difflab.pipelines.generate import generate
from difflab.text.encoder import text_encoder
from difflab.train.checkpoint import load_denoiser

# prompt -> intended Fashion-MNIST class; none of these strings is a training caption
UNSEEN = {
    "some jeans": "Trouser",
    "a sandal for summer": "Sandal",
    "denim jeans for work": "Trouser",
    "a cosy woollen sweatshirt": "Pullover",
    "a warm winter anorak": "Coat",
    "an elegant evening gown for a party": "Dress",
    "a leather satchel": "Bag",
    "chelsea boots": "Ankle boot",
    "white tennis shoes": "Sneaker",
    "a short-sleeved tshirt": "T-shirt/top",
    "a formal button-down shirt with a collar": "Shirt",
}
SEEN = {"a photo of a dress": "Dress", "a large dark coat": "Coat", "sneakers": "Sneaker"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", default=str(BUNDLED_CONDITIONAL_MODEL))
    p.add_argument("--n", type=int, default=100, help="samples per prompt")
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance weight w (scale 1 + w)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="text_prompts", help="OUT.json and OUT.png")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    denoiser, checkpoint = load_denoiser(args.checkpoint)
    names = checkpoint.config.class_names
    training_captions = set(Captioner.for_dataset(load_dataset("fashion-mnist", "test")).captions)
    net = bundled_feature_net()[0]
    encoder = text_encoder()
    rows, grids = [], {}
    print(f"{'prompt':<44}{'class':>13}{'accuracy':>10}{'seen':>6}{'seconds':>9}", flush=True)
    for prompt, target in {**UNSEEN, **SEEN}.items():
        start = time.perf_counter()
        cond = Condition(None, encoder.encode([prompt])).repeat(args.n)
        x = generate(denoiser, checkpoint.config.data_shape, args.n, sampler="ddim", steps=args.steps, seed=args.seed,
                     batch=args.batch, cond=cond, guidance=Guidance(cfg=args.cfg))
        probs = extract(net, to_uint8(x)).probs
        accuracy = float((probs.argmax(1) == names.index(target)).double().mean())
        seen = prompt in training_captions
        rows.append({"prompt": prompt, "class": target, "accuracy": accuracy, "seen_in_training": seen,
                     "predicted_shares": np.bincount(probs.argmax(1).numpy(), minlength=len(names)).tolist()})
        grids[f"{prompt}\n{accuracy:.0%}"] = to_uint8(x[:8])
        print(f"{prompt:<44}{target:>13}{accuracy:>10.1%}{'yes' if seen else 'no':>6}"
              f"{time.perf_counter() - start:>9.1f}", flush=True)
    unseen = [r["accuracy"] for r in rows if not r["seen_in_training"]]
    print(f"mean accuracy over {len(unseen)} unseen prompts: {np.mean(unseen):.1%} (w = {args.cfg}, n = {args.n})")
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"checkpoint": args.checkpoint, "cfg": args.cfg, "n": args.n,
                                                    "steps": args.steps, "rows": rows,
                                                    "unseen_mean_accuracy": float(np.mean(unseen))}, indent=2))
    plot_sample_grids(grids, out.with_suffix(".png"), columns=1)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    run_script(main)
