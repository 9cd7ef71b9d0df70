"""difflab: a diffusion-model laboratory on PyTorch.

Every trained network is seen as a denoiser D(x, sigma, cond) -> x0_hat in variance-exploding
coordinates; samplers, guidance and evaluation only talk to that interface (see DESIGN.md).
"""

__version__ = "0.1.0"
