"""Editing with a trained model: img2img (SDEdit), masked inpainting (replacement and RePaint) and DDIM inversion.

Every edit is a start state and/or a denoiser wrapper on the one generation path (difflab.pipelines.generate), not a
new sampler loop; latent models edit through their autoencoder (Model.encode / Model.decoder).
"""
