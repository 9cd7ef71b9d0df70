"""img2img and inpainting for the API: a body checked as txt2img is (plan_txt2img), its init images and mask decoded
and prepared as the web UI prepares them (difflab.edit.images), each batch sampled as an Edit (difflab.edit.img2img),
and the answer in the web UI's shape (run_plan, then the img2img fields).

As in the web UI: one init image serves every image, or there is one per image of a batch (batch_size of them, the same
for every n_iter); `denoising_strength` runs about strength x steps of a `steps` grid, or exactly `steps` with the
option img2img_fix_steps (override_settings); `include_init_images` keeps init_images and mask in `parameters`.
Images are edited at the model's size (init images of another size are brought to it by `resize_mode`); another
width/height is made from those by hr_upscaler, as for txt2img.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from difflab.edit.images import RESIZE_MODES, prepare_image, prepare_mask
from difflab.edit.img2img import FILLS, Edit, MaskRequest, plan_edit
from difflab.edit.inpaint import repaint_path
from difflab.pipelines.dialect import RequestError
from difflab.pipelines.start import cut_grid
from difflab.serve.a1111 import decode_image
from difflab.serve.generation import Txt2Img, plan_txt2img, run_plan
from difflab.serve.model import ServedModel
from difflab.serve.resize import MAX_SIDE
from difflab.serve.schemas import Img2ImgRequest
from difflab.serve.worker import Job

FIX_STEPS = "img2img_fix_steps"  # the web UI's option "do exactly the amount of steps the slider specifies"
FILL_NAMES = ("fill", "original", "latent noise", "latent nothing")  # the infotext's "Masked content"


def read_image(encoded: str, field: str):
    """A base64 image of at most MAX_SIDE pixels a side, decoded."""
    image = decode_image(encoded, field)
    if max(image.size) > MAX_SIDE:
        raise RequestError(field, f"{field} is {image.width}x{image.height}; at most {MAX_SIDE} pixels a side")
    return image


@dataclass(frozen=True)
class Img2Img(Txt2Img):
    """A checked img2img body: txt2img's plan, and the inputs every batch is edited from."""

    images: torch.Tensor | None = None  # [1 or batch_size, C, H, W] in [-1, 1] at the model's size (always given)
    mask: MaskRequest | None = None
    exact_steps: bool = False

    @property
    def blur(self) -> tuple[int, int]:
        """The mask blur (x, y): mask_blur sets both, as in the web UI."""
        body = self.body
        return (body.mask_blur_x, body.mask_blur_y) if body.mask_blur is None else (body.mask_blur, body.mask_blur)

    @property
    def edit_fields(self) -> dict[str, Any]:
        body, (blur_x, blur_y) = self.body, self.blur
        masked = {} if self.mask is None else {
            "Mask blur": blur_x if blur_x == blur_y else f"{blur_x}x{blur_y}",
            "Masked content": FILL_NAMES[body.inpainting_fill], "Mask mode": "Inpaint not masked"
            if body.inpainting_mask_invert else None, "Inpaint method": body.difflab_inpaint_method}
        return {"Denoising strength": body.denoising_strength,
                **{key: value for key, value in masked.items() if value is not None}}

    def part(self, index: int) -> Edit:
        return plan_edit(super().part(index), self.model, self.images, self.body.denoising_strength,
                         exact_steps=self.exact_steps, mask=self.mask)

    def job(self) -> Job:
        """Progress counts the steps a batch runs: those below the strength's level (RePaint's up and down too)."""
        steps = 1
        edit = self.part(0)
        if edit.runs:
            request = edit.plan.request
            grid = edit.plan.grid()
            steps = len(grid if request.sigma_start is None else cut_grid(grid, request.sigma_start)) - 1
            if self.mask is not None and self.mask.method == "repaint":
                steps = len(repaint_path(steps, self.mask.jump_length, self.mask.jump_n)) - 1
        return Job(self.body.n_iter, steps, self.body.batch_size, self.body.force_task_id, kind="img2img")


def plan_img2img(body: Img2ImgRequest, model: ServedModel, strict_names: bool = False, **options: Any) -> Img2Img:
    """Everything the model cannot honour is a RequestError naming the field; what it ignores becomes a warning."""
    if not body.init_images:
        raise RequestError("init_images", "init_images must hold at least one base64 image")
    if len(body.init_images) not in (1, body.batch_size):
        raise RequestError("init_images", f"init_images must hold 1 image or batch_size = {body.batch_size}, got "
                                          f"{len(body.init_images)}")
    if body.difflab_size_by == "model":
        raise RequestError("difflab_size_by", "img2img edits at the model's size; another width/height is made by "
                                              "hr_upscaler (difflab_size_by upscaler)")
    if model.decode is not None and model.encode is None:
        raise RequestError("init_images", f"model {model.name} samples latents and is served without its encoder")
    txt2img = plan_txt2img(body, model, strict_names, **options)
    shape = model.shape
    resize_mode = RESIZE_MODES[body.resize_mode]
    images = torch.stack([prepare_image(read_image(data, f"init_images.{i}"), shape, resize_mode, f"init_images.{i}")
                          for i, data in enumerate(body.init_images)])
    mask = None
    warnings = [w for w in txt2img.warnings if not w.startswith(f"override_settings.{FIX_STEPS} ignored")]
    if body.mask:
        blur_x, blur_y = (body.mask_blur_x, body.mask_blur_y) if body.mask_blur is None else (body.mask_blur,) * 2
        pixels = prepare_mask(read_image(body.mask, "mask"), shape[1], shape[2], resize_mode=resize_mode,
                              blur_x=blur_x, blur_y=blur_y, invert=bool(body.inpainting_mask_invert), field="mask")
        mask = MaskRequest(pixels, FILLS[body.inpainting_fill], body.difflab_inpaint_method, body.difflab_jump_length,
                           body.difflab_jump_n)
        if body.inpaint_full_res:
            warnings.append("inpaint_full_res ignored: difflab inpaints the whole image (the web UI's \"whole "
                            "picture\" area)")
    exact = bool((body.override_settings or {}).get(FIX_STEPS, False))
    edit = Img2Img(**{f.name: getattr(txt2img, f.name) for f in fields(txt2img) if f.init},
                   images=images, mask=mask, exact_steps=exact)
    edit = replace(edit, warnings=tuple(warnings))
    edit.part(0)  # refuse now what sampling would refuse (a sampler inpainting cannot use, the start's shape)
    return edit


def run_img2img(edit: Img2Img, job: Job) -> dict[str, Any]:
    """run_plan's answer with the img2img fields: A1111's info keys and, unless include_init_images, no inputs in
    `parameters`."""
    answer = run_plan(edit, job)
    body = edit.body
    info = json.loads(answer["info"])
    info.update(denoising_strength=body.denoising_strength, resize_mode=body.resize_mode,
                mask_blur_x=edit.blur[0], mask_blur_y=edit.blur[1],
                inpainting_fill=body.inpainting_fill, inpainting_mask_invert=body.inpainting_mask_invert,
                img2img_fix_steps=edit.exact_steps, difflab_inpaint_method=None if edit.mask is None
                else body.difflab_inpaint_method)
    parameters = answer["parameters"]
    if not body.include_init_images:
        parameters.update(init_images=None, mask=None)
    return {**answer, "parameters": parameters, "info": json.dumps(info)}
