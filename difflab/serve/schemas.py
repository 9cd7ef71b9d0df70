"""Request and response bodies of the AUTOMATIC1111-compatible API, the range of every field, and one-line messages
for the fields a request gets wrong."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from difflab.serve.resize import MAX_PIXELS, MAX_SIDE
from difflab.serve.stage_schemas import MAX_PROMPT, StageFields

MAX_STEPS = 1000
MAX_IMAGES = 64  # batch_size * n_iter
MAX_SEED = 2**32 - 1
MAX_BODY_BYTES = 16 << 20  # request bodies larger than this are refused with 413 (img2img: a few base64 images)


# The web UI's txt2img fields that difflab does not use, with their defaults there (modules/processing.py
# StableDiffusionProcessing and ...Txt2Img, v1.10, and the API's own additions in modules/api/models.py). A value other
# than its default (or null, false, 0 or empty) asks for something difflab does not do, and is listed in info.warnings.
IGNORED_FIELDS: dict[str, Any] = {
    "styles": None, "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
    "restore_faces": None, "tiling": None, "do_not_save_samples": False, "do_not_save_grid": False,
    "s_min_uncond": None, "disable_extra_networks": False, "firstpass_image": None, "comments": None,
    "firstphase_width": 0, "firstphase_height": 0, "script_name": None, "script_args": [],
    "save_images": False, "alwayson_scripts": {}, "infotext": None,
}


class Txt2ImgRequest(StageFields):
    """POST /sdapi/v1/txt2img. Every field may be null, meaning its default, as in the web UI's API. Its fields that
    difflab does not use (IGNORED_FIELDS) are accepted and listed in `info.warnings` when they ask for something."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field("", max_length=MAX_PROMPT, description="free text on a text-conditional model, a class name "
                        "on a class-only model; an unconditional model ignores it and says so in info.warnings")
    negative_prompt: str = Field("", max_length=MAX_PROMPT, description="what classifier-free guidance steers away "
                                 "from (cfg_scale > 1): free text on a text model, a class on a class-only model; "
                                 "ignored (with a warning) by an unconditional model")
    steps: int = Field(50, ge=1, le=MAX_STEPS, description="sampler steps (the web UI API's default, 50)")
    cfg_scale: float | None = Field(None, ge=0, le=30, description="classifier-free guidance scale 1 + w; 1 is no "
                                    "guidance; default 2 (w = 1) on a conditional model; an unconditional model "
                                    "ignores it, with a warning")
    sampler_name: str | None = Field(None, description="a name from GET /sdapi/v1/samplers, optionally ending in a "
                                     "scheduler label (\"Euler a Karras\"); default Euler (the web UI API's "
                                     "sampler_index default). Unknown names fall back to the first, DPM++ 2M, with a "
                                     "warning (422 on a server run with --strict-names)")
    sampler_index: str | None = Field(None, description="older clients' field for sampler_name")
    scheduler: str | None = Field(None, description="a name or label from GET /sdapi/v1/schedulers (karras or "
                                  "Karras); a scheduler suffix in sampler_name wins over it")
    eta: float | None = Field(None, description="noise of DDIM (default 0), the ancestral samplers and DPM++ 2M SDE "
                              "(default 1); >= 0")
    s_churn: float | None = Field(None, description="Karras et al. churn of Euler and Heun (default 0); >= 0")
    s_tmin: float | None = Field(None, description="lowest sigma that gets churn (default 0); >= 0")
    s_tmax: float | None = Field(None, description="highest sigma that gets churn; 0 or null is infinite, as in the "
                                 "web UI")
    s_noise: float | None = Field(None, description="churn noise scale of Euler and Heun, fresh-noise scale of DPM++ "
                                  "2M SDE (default 1); > 0")
    difflab_parallel_window: int | None = Field(None, ge=1, le=MAX_STEPS, description="difflab's own field: the "
                                                "ParaDiGMS samplers' window of steps evaluated in one batch (default "
                                                "8)")
    difflab_parallel_tolerance: float | None = Field(None, ge=0, le=1, description="difflab's own field: the "
                                                     "ParaDiGMS samplers' tolerance on the noise scale (default 0.1; "
                                                     "0 reproduces the sequential sampler)")
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 picks one at random; image i uses seed + i")
    batch_size: int = Field(1, ge=1, le=MAX_IMAGES, description="images per batch")
    n_iter: int = Field(1, ge=1, le=MAX_IMAGES, description=f"batches; batch_size * n_iter <= {MAX_IMAGES}")
    width: int | None = Field(None, ge=1, le=MAX_SIDE, description="default: the model's width; another width is "
                              "made at the model's size and resized by hr_upscaler")
    height: int | None = Field(None, ge=1, le=MAX_SIDE, description="default: the model's height; as width")
    hr_upscaler: str | None = Field(None, description="how an image is resized to width x height: a name from GET "
                                    "/sdapi/v1/upscalers (default Lanczos)")
    difflab_size_by: Literal["upscaler", "model"] = Field("upscaler", description="difflab's own field: how a "
                                                          "size other than the model's is made: `upscaler` resizes "
                                                          "the model's images by hr_upscaler; `model` runs a U-Net at "
                                                          "that size (one it was not trained at)")
    send_images: bool = Field(True, description="false answers without the images")
    override_settings: dict[str, Any] | None = Field(None, description="options for this request only; difflab "
                                                     "takes sd_model_checkpoint (a title from GET /sdapi/v1/sd-models)")
    override_settings_restore_afterwards: bool = Field(True, description="false keeps the overriding model loaded "
                                                       "after the request")
    force_task_id: str | None = Field(None, max_length=200, description="the id POST /internal/progress knows this "
                                      "request by (default: one is made up)")

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data: Any) -> Any:
        return {key: value for key, value in data.items() if value is not None} if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _bounded_images(self) -> Txt2ImgRequest:
        if self.batch_size * self.n_iter > MAX_IMAGES:
            raise ValueError(f"batch_size * n_iter must be <= {MAX_IMAGES}, got {self.batch_size} * {self.n_iter}")
        pixels = self.batch_size * self.n_iter * (self.width or 1) * (self.height or 1)
        if pixels > MAX_PIXELS:
            raise ValueError(f"batch_size * n_iter * width * height must be <= {MAX_PIXELS} pixels (64 images of "
                             f"512x512), got {pixels}")
        return self


class Img2ImgRequest(Txt2ImgRequest):
    """POST /sdapi/v1/img2img: img2img and inpainting (difflab.serve.img2img). Fields and defaults as the web UI's
    (modules/processing.py StableDiffusionProcessingImg2Img, modules/api/models.py)."""

    init_images: list[str] = Field(default_factory=list, max_length=MAX_IMAGES, description="base64 images (PNG, "
                                   "or data:image/ URIs): one for every image, or one per image of a batch")
    denoising_strength: float = Field(0.75, ge=0, le=1, description="how far to noise the init images: 0 returns "
                                      "them, 1 starts from pure noise")
    mask: str | None = Field(None, description="base64 image; white is repainted, black kept")
    resize_mode: int = Field(0, ge=0, le=3, description="how an init image of another size is brought to the "
                             "model's: 0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize (latent "
                             "upscale: bilinear)")
    mask_blur: int | None = Field(None, ge=0, le=64, description="Gaussian blur std of the mask in pixels; sets "
                                  "mask_blur_x and mask_blur_y")
    mask_blur_x: int = Field(4, ge=0, le=64, description="horizontal mask blur std in pixels")
    mask_blur_y: int = Field(4, ge=0, le=64, description="vertical mask blur std in pixels")
    inpainting_fill: int = Field(0, ge=0, le=3, description="what the masked region starts from below strength 1: "
                                 "0 fill (surrounding colours), 1 original, 2 latent noise, 3 latent nothing")
    inpainting_mask_invert: int = Field(0, ge=0, le=1, description="1 repaints the black region instead")
    inpaint_full_res: bool = Field(True, description="the web UI's \"only masked\" area; difflab always inpaints "
                                   "the whole image (a warning says so when a mask is given)")
    inpaint_full_res_padding: int = Field(0, ge=0, description="ignored, as inpaint_full_res")
    include_init_images: bool = Field(False, description="echo init_images and mask in the answer's parameters")
    difflab_inpaint_method: Literal["replace", "repaint"] = Field(
        "replace", description="difflab's own field: replace sets the known region to the noised original at every "
        "step; repaint also resamples (Lugmayr et al. 2022)")
    difflab_jump_length: int = Field(10, ge=1, le=MAX_STEPS, description="RePaint: levels per jump")
    difflab_jump_n: int = Field(10, ge=1, le=100, description="RePaint: resamplings per jump point")


class PngInfoRequest(BaseModel):
    image: str = Field(max_length=MAX_BODY_BYTES, description="a base64 PNG (or data:image/png;base64,... URI)")


class PngInfoResponse(BaseModel):
    info: str = Field(description="the image's `parameters` text")
    items: dict[str, str] = Field(description="its other text chunks")
    parameters: dict[str, str] = Field(description="`info` parsed into fields, as the web UI parses it")


class TaskProgressRequest(BaseModel):
    """POST /internal/progress, the web UI's per-task progress (modules/progress.py)."""

    id_task: str | None = Field(None, description="a txt2img request's force_task_id")
    id_live_preview: int = Field(-1, description="the id of the last preview received; it is not sent again")
    live_preview: bool = Field(True, description="include the current preview")


class TaskProgressResponse(BaseModel):
    active: bool
    queued: bool
    completed: bool
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = Field(None, description="a data:image/png;base64 URI")
    id_live_preview: int | None = None
    textinfo: str | None = None


class GenerationResponse(BaseModel):
    images: list[str] = Field(description="base64 PNGs, each with a `parameters` text chunk")
    parameters: dict[str, Any] = Field(description="the request as understood, defaults filled in")
    info: str = Field(description="JSON: seeds, settings, infotexts, warnings, interrupted")


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class ModelItem(BaseModel):
    title: str
    model_name: str
    hash: str
    sha256: str
    filename: str
    config: str | None = None


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool
    job: str
    job_count: int
    job_no: int
    sampling_step: int
    sampling_steps: int
    queued: int = Field(description="requests waiting behind the running one")


class ProgressResponse(BaseModel):
    progress: float = Field(description="fraction of the running request done, 0..1")
    eta_relative: float = Field(description="estimated seconds left for the running request")
    state: ProgressState
    current_image: str | None = Field(description="base64 PNG of the first image's current estimate x0_hat")
    textinfo: str | None = None


class ModelInfo(BaseModel):
    """GET /difflab/v1/model: what the web page needs to lay out its form."""

    name: str
    conditioning: str = Field(description="'none', 'class' (the prompt is a class name) or 'text' (free text)")
    class_names: list[str] | None
    width: int
    height: int
    channels: int
    default_cfg_scale: float = Field(description="cfg_scale when a request gives none: 1 + w")
    max_steps: int = MAX_STEPS
    max_images: int = MAX_IMAGES
    max_seed: int = MAX_SEED


_EXPECTED = {"int": "an integer", "float": "a number", "string": "a string", "list": "a list", "bool": "true or false",
             "model": "a JSON object"}


def describe_error(error: dict[str, Any]) -> tuple[str, str]:
    """(field, one sentence naming it and its allowed range) for one pydantic error of a request body or query."""
    loc = [str(part) for part in error["loc"] if part not in ("body", "query")]
    field = ".".join(loc) or "body"
    kind = error["type"]
    if kind == "value_error":
        return field, str(error["ctx"]["error"])
    if kind == "json_invalid":
        return "body", f"the body is not valid JSON ({error['ctx'].get('error', '')})"
    if kind == "string_too_long":
        return field, f"{field} must be at most {error['ctx']['max_length']} characters"
    if kind == "literal_error":
        return field, f"{field} must be {error['ctx']['expected']}, got {error.get('input')!r}"
    if kind == "too_long":
        return field, f"{field} must hold at most {error['ctx']['max_length']} items"
    metadata = Img2ImgRequest.model_fields[loc[0]].metadata if loc and loc[0] in Img2ImgRequest.model_fields else []
    bounds = {name: getattr(m, name) for m in metadata for name in ("ge", "le") if hasattr(m, name)}
    span = f"{bounds['ge']}..{bounds['le']}" if len(bounds) == 2 else None
    got = repr(error.get("input"))
    got = got if len(got) <= 40 else got[:37] + "..."
    expected = _EXPECTED.get(kind.split("_")[0])
    if expected is None and span:
        return field, f"{field} must lie in {span}, got {got}"
    if expected is not None:
        return field, f"{field} must be {expected}{f' in {span}' if span else ''}, got {got}"
    return field, f"{field}: {error['msg']}"
