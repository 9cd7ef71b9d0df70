"""End-to-end pipelines built on the denoiser interface."""
