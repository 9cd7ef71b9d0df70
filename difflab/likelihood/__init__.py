"""Likelihood of diffusion models: the variational bound (Ho et al. 2020; Nichol & Dhariwal 2021) and the
probability-flow ODE with Hutchinson's trace estimator (Song et al. 2021), in nats and bits per dimension."""
