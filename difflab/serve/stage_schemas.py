"""The web UI's txt2img fields for multi-stage generation, with its defaults (modules/processing.py
StableDiffusionProcessingTxt2Img and StableDiffusionProcessing, v1.10): the hires fix and the refiner."""

from __future__ import annotations

from pydantic import BaseModel, Field

HIRES_MAX_SCALE = 8.0
MAX_PROMPT = 2000  # characters


class StageFields(BaseModel):
    enable_hr: bool = Field(False, description="hires fix: sample at width x height, upscale by hr_upscaler to "
                            "hr_scale times that (or hr_resize_x x hr_resize_y), then denoise again at "
                            "denoising_strength (difflab.pipelines.hires)")
    hr_scale: float = Field(2.0, gt=0, le=HIRES_MAX_SCALE, description="hires fix: the upscale factor")
    hr_resize_x: int = Field(0, ge=0, le=2048, description="hires fix: the target width instead of hr_scale (0: "
                             "from hr_resize_y and the aspect ratio, or hr_scale)")
    hr_resize_y: int = Field(0, ge=0, le=2048, description="hires fix: the target height, as hr_resize_x")
    hr_second_pass_steps: int = Field(0, ge=0, le=1000, description="hires fix: the second pass's steps (0: steps)")
    denoising_strength: float = Field(0.75, ge=0, le=1, description="hires fix: the second pass's strength; the "
                                      "start level follows img2img's rule")
    hr_sampler_name: str | None = Field(None, description="hires fix: the second pass's sampler, as sampler_name "
                                        "(null or \"Use same sampler\": sampler_name)")
    hr_scheduler: str | None = Field(None, description="hires fix: the second pass's scheduler, as scheduler (null "
                                     "or \"Use same scheduler\": scheduler)")
    hr_prompt: str = Field("", max_length=MAX_PROMPT, description="hires fix: the second pass's prompt, as prompt "
                           "(\"\": prompt); its <lora:...> tags are ignored (the prompt's apply to both passes)")
    hr_checkpoint_name: str | None = Field(None, description="hires fix: the second pass's model, a checkpoint "
                                           "from GET /sdapi/v1/sd-models (null, \"\" or \"Use same checkpoint\": "
                                           "the first pass's); a pixel model of the same channels that accepts the "
                                           "request's condition")
    hr_negative_prompt: str = Field("", max_length=MAX_PROMPT, description="hires fix: the second pass's negative "
                                    "prompt, as negative_prompt (\"\": negative_prompt)")
    difflab_hr_noise_level: float | None = Field(None, ge=0, description="difflab's own field: with an hr_upscaler "
                                                 "that is a super-resolution model (in the hires fix or to another "
                                                 "width x height), the noise-conditioning augmentation level of its "
                                                 "low-resolution input (default 0)")
    refiner_checkpoint: str | None = Field(None, description="a checkpoint from GET /sdapi/v1/sd-models that takes "
                                           "over the low-noise end of the trajectory (difflab.pipelines.refiner)")
    refiner_switch_at: float | None = Field(None, ge=0, le=1, description="the share of the trajectory the model "
                                            "runs before the refiner takes over (the UI's default rule: by noise "
                                            "level, the base model's timesteps)")
