"""The plot helpers write PNG files of the expected kind from measured numbers."""

import numpy as np
from PIL import Image

from difflab.eval.plots import plot_fd_vs_nfe, plot_guidance_tradeoff, plot_sample_grids


def test_plots_write_pngs(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8)
    plot_sample_grids({"ddim 10": images, "heun 10": images[:9]}, tmp_path / "grids.png")
    plot_fd_vs_nfe({"ddim": [(10, 0.5), (50, 0.2), (20, 0.3)], "heun": [(19, 0.4), (99, 0.15)]}, tmp_path / "nfe.png")
    plot_guidance_tradeoff([1, 2, 4], [0.3, 0.2, 0.4], {"precision": [0.6, 0.7, 0.8], "recall": [0.7, 0.6, 0.4]},
                           tmp_path / "cfg.png")
    for name in ("grids", "nfe", "cfg"):
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 150
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files behind
