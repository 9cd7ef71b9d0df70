"""Request and response bodies of the AUTOMATIC1111-compatible API, the range of every field, and one-line messages
for the fields a request gets wrong."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_STEPS = 1000
MAX_IMAGES = 64  # batch_size * n_iter
MAX_SEED = 2**32 - 1
MAX_PROMPT = 2000  # characters
MAX_BODY_BYTES = 1 << 20  # request bodies larger than this are refused with 413


class Txt2ImgRequest(BaseModel):
    """POST /sdapi/v1/txt2img. Fields of that API that difflab does not use are accepted and listed in
    `info.warnings` when they ask for something (a value other than false/0/empty/null)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field("", max_length=MAX_PROMPT, description="free text on a text-conditional model, a class name "
                        "on a class-only model; an unconditional model ignores it and says so in info.warnings")
    negative_prompt: str = Field("", max_length=MAX_PROMPT, description="what classifier-free guidance steers away "
                                 "from (cfg_scale > 1): free text on a text model, a class on a class-only model; "
                                 "ignored (with a warning) by an unconditional model")
    steps: int = Field(20, ge=1, le=MAX_STEPS, description="sampler steps")
    cfg_scale: float | None = Field(None, ge=0, le=30, description="classifier-free guidance scale 1 + w; 1 (the "
                                    "default) is no guidance, and the only value an unconditional model takes")
    sampler_name: str | None = Field(None, description="a name from GET /sdapi/v1/samplers (default: the first)")
    sampler_index: str | None = Field(None, description="older clients' field for sampler_name")
    scheduler: str | None = Field(None, description="Automatic, Uniform, Karras or Exponential")
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 picks one at random; image i uses seed + i")
    batch_size: int = Field(1, ge=1, le=MAX_IMAGES, description="images per batch")
    n_iter: int = Field(1, ge=1, le=MAX_IMAGES, description=f"batches; batch_size * n_iter <= {MAX_IMAGES}")
    width: int | None = Field(None, description="must be the model's width (default)")
    height: int | None = Field(None, description="must be the model's height (default)")

    @model_validator(mode="after")
    def _bounded_images(self) -> Txt2ImgRequest:
        if self.batch_size * self.n_iter > MAX_IMAGES:
            raise ValueError(f"batch_size * n_iter must be <= {MAX_IMAGES}, got {self.batch_size} * {self.n_iter}")
        return self


class Img2ImgRequest(Txt2ImgRequest):
    """POST /sdapi/v1/img2img: validated, then refused until difflab has an image-to-image pipeline."""

    init_images: list[str] = Field(default_factory=list, max_length=MAX_IMAGES, description="base64 PNG images")
    denoising_strength: float = Field(0.75, ge=0, le=1, description="how far to noise the init images")
    mask: str | None = Field(None, description="base64 PNG; white is repainted")


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
