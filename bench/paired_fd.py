"""FD of sample files at one n against a reference file's, with the paired-bootstrap std of each gap.

Each file holds `difflab eval --save` / `bench/fewstep.py --save` samples (uint8 'images'); the first --n of each are
taken. Where all were drawn from the same seeds (sample i from seed + i), row i of every file shares its start noise,
so the bootstrap resamples the same rows in both files of a pair (difflab.eval.frechet.paired_gap_std), and the std
is that of the gap itself, not of either FD.

    python bench/paired_fd.py ddpm1000_n1000.npz dpmpp_2m_karras_10.npz consistency_distillation_2.npz --n 1000
"""

from __future__ import annotations

import argparse

from difflab.errors import run_script
from difflab.eval.features import bundled_feature_net, extract, reference_features
from difflab.eval.frechet import frechet_distance, gaussian_moments, paired_gap_std
from difflab.eval.samples import read_samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", help="the reference samples (e.g. DDPM-1000's)")
    p.add_argument("others", nargs="+", help="samples to compare with it")
    p.add_argument("--n", type=int, help="the first n samples of each file (default: the smallest file's size)")
    p.add_argument("--bootstrap", type=int, default=200, help="paired resamples (default 200)")
    args = p.parse_args()
    images = {path: read_samples(path).images for path in [args.reference, *args.others]}
    points = [path for path, x in images.items() if x is None]
    if points:
        raise SystemExit(f"FD takes images; {', '.join(points)} hold 2-D points")
    n = args.n or min(len(x) for x in images.values())
    short = [path for path, x in images.items() if len(x) < n]
    if short:
        raise SystemExit(f"--n {n}: fewer samples in {', '.join(short)}")
    net = bundled_feature_net()[0]
    features = {path: extract(net, x[:n]).features for path, x in images.items()}
    test = gaussian_moments(reference_features()[0].features)
    base = frechet_distance(*gaussian_moments(features[args.reference]), *test)
    print(f"n = {n}, {args.bootstrap} paired resamples")
    print(f"{base:7.2f}  {args.reference} (reference)")
    for path in args.others:
        fd = frechet_distance(*gaussian_moments(features[path]), *test)
        std = paired_gap_std(features[path], features[args.reference], test, args.bootstrap)
        print(f"{fd:7.2f}  {path}: {fd / base:.2f}x the reference, gap {fd - base:+.2f} +- {std:.2f}")


if __name__ == "__main__":
    run_script(main)
