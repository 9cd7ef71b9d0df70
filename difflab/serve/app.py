"""The FastAPI app: the AUTOMATIC1111-compatible routes under /sdapi/v1 (and its per-task /internal/progress), the
page at /, OpenAPI docs at /docs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from difflab import __version__
from difflab.images import to_uint8
from difflab.pipelines.dialect import RequestError
from difflab.pipelines.samplers import offered_samplers
from difflab.serve.a1111 import parse_infotext, png_base64, read_png_text
from difflab.serve.adapters import Adapters, adapter_routes
from difflab.serve.catalog import Catalog
from difflab.serve.controlnet import ControlNetCatalog, controlnet_routes
from difflab.serve.generation import MODEL_SETTING, default_cfg_scale, plan_txt2img, run_plan
from difflab.serve.img2img import plan_img2img, run_img2img
from difflab.serve.listings import listings
from difflab.serve.middleware import BasicAuth, BodyLimit
from difflab.serve.model import ServedModel
from difflab.serve.schemas import (MAX_BODY_BYTES, GenerationResponse, Img2ImgRequest, ModelInfo, ModelItem,
                                   PngInfoRequest, PngInfoResponse, ProgressResponse, ProgressState, SamplerItem,
                                   TaskProgressRequest, TaskProgressResponse, Txt2ImgRequest, describe_error)
from difflab.serve.settings import SAMPLER_SETTINGS, checked_settings
from difflab.serve.stages import SAME_CHECKPOINT, with_stages
from difflab.serve.upscalers import UpscalerCatalog
from difflab.serve.worker import Job, QueueFull, Worker

STATIC = Path(__file__).resolve().parent / "static"
USAGE = """\
- **Prompts.** A text-conditional model takes free text as `prompt` (encoded by its frozen text encoder; empty is an
  unconditional sample). A class-only model takes one class name (or index), or an empty prompt for an
  unconditional sample; other text is refused with 422. An unconditional model accepts `prompt` and
  `negative_prompt` so existing client scripts keep working, but ignores them: the images say nothing about the
  prompt (it is left out of their `parameters` text) and `info.warnings` says it was ignored.
- **Guidance.** On a conditional model `cfg_scale` is the UI's classifier-free guidance scale 1 + w (1 is no
  guidance, 7 means w = 6), and `negative_prompt` (free text on a text model, a class on a class-only model) is
  what guidance steers away from instead of the unconditional model; it acts only with `cfg_scale` > 1.
- **Names.** Sampler and scheduler names are matched as the web UI matches them, in any case: a name or label
  (`karras` or `Karras`), an alias, or a scheduler suffix in `sampler_name` ("Euler a Karras"). A request naming no
  sampler gets Euler (the UI API's `sampler_index` default); an unknown name falls back to the UI's first, DPM++ 2M,
  with a warning in `info.warnings` (422 on a server run with `--strict-names`). `Automatic` is the sampler's own
  schedule in the UI (Karras for DPM++ 2M, Exponential for DPM++ 2M SDE, Uniform for Euler).
- **Sizes.** Images are made at the model's size; another `width`/`height` (up to 2048) is served by resizing them
  with `hr_upscaler` (GET /sdapi/v1/upscalers; default Lanczos; a super-resolution model there upscales them to its
  own size, its augmentation level `difflab_hr_noise_level`), or, with difflab's own field
  `"difflab_size_by": "model"`, by running a U-Net at that size. `info.size_by` and the PNG text say which.
- **Models.** GET /sdapi/v1/sd-models lists the checkpoints; POST /sdapi/v1/options with `sd_model_checkpoint`, or a
  request's `override_settings`, switches between requests, never during one.
- **Sampler settings.** The UI's `eta_ddim`, `eta_ancestral` (the eta of a request that gives none) and UniPC's
  `uni_pc_order`, `uni_pc_variant`, `uni_pc_skip_type`, `uni_pc_lower_order_final`, set by POST /sdapi/v1/options or
  per request by `override_settings`, apply to the UI's sampler names (difflab.serve.settings).
- **Refused with 422**, naming the field: `cfg_scale` below 1 on a conditional model (an unconditional model ignores
  it, with a warning), a `negative_prompt` that is not a class of a class-only model, sampler options out of range
  (`eta`, `s_churn`, ...), an unknown checkpoint, and an init image or mask that is not a base64 image.
- **img2img and inpainting.** POST /sdapi/v1/img2img takes the web UI's `init_images`, `denoising_strength`,
  `resize_mode`, `mask`, `mask_blur` (or `mask_blur_x`/`_y`), `inpainting_fill`, `inpainting_mask_invert` and
  `include_init_images`; `override_settings.img2img_fix_steps` runs exactly `steps` steps. The unmasked region
  comes back pixel for pixel; difflab's `difflab_inpaint_method` "repaint" resamples (RePaint).
- Other fields of that API are accepted; any that asks for something is listed in `info.warnings` as ignored.
- **Seeds.** Image i of a request uses `seed + i`, so a seed and the same settings give byte-identical PNGs.
- **Load.** One generation runs at a time; a few more wait; beyond that the answer is 503 with Retry-After.
  POST /sdapi/v1/interrupt stops the running request, which answers with the batches (`n_iter`) already done;
  POST /sdapi/v1/skip drops the running batch and goes on with the next. POST /internal/progress follows one request
  by its `force_task_id`.
"""
# POST /options: the rest is ignored (a header says)
OPTIONS_APPLIED = ("sd_model_checkpoint", "live_previews_enable", *SAMPLER_SETTINGS)
CONDITIONING_WORDS = {"none": "unconditional", "class": "class-conditional", "text": "text prompts"}
ERRORS = {422: {"description": "a field out of range, or something the model cannot do; `detail` names the field"},
          503: {"description": "the queue is full; retry after the Retry-After header's seconds"}}


def create_app(model: ServedModel, *, auth: tuple[str, str] | None = None, queue_size: int = 4,
               catalog: Catalog | None = None, strict_names: bool = False, flags: dict[str, Any] | None = None,
               adapters: Adapters | None = None, controlnets: ControlNetCatalog | None = None,
               upscalers: UpscalerCatalog | None = None, precision: str = "fp32") -> FastAPI:
    """An app serving `model` (current among those of `catalog`): one generation at a time, `queue_size` more may wait,
    the rest get 503. `strict_names` refuses unknown sampler, scheduler and upscaler names instead of falling back;
    `upscalers` are the super-resolution models hr_upscaler may name; `precision` "bf16" runs every request's network
    under bf16 autocast (difflab.precision)."""
    worker = Worker(queue_size)
    catalog = catalog or Catalog(model)
    settings = {"live_previews_enable": True, **SAMPLER_SETTINGS}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.shutdown()

    app = FastAPI(title="difflab", version=__version__, lifespan=lifespan,
                  description=f"Serving model **{model.name}** ({model.width}x{model.height}, "
                              f"{CONDITIONING_WORDS[model.conditioning]}) and the others of GET /sdapi/v1/sd-models. "
                              "A subset of the AUTOMATIC1111 web UI API; the web page is at /.\n\n" + USAGE)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if auth is not None:
        app.add_middleware(BasicAuth, user=auth[0], password=auth[1])  # outermost: checked before the body is read
    adapters = adapters or Adapters()
    app.include_router(adapter_routes(adapters, lambda: catalog.current))
    controlnets = controlnets or ControlNetCatalog()
    app.include_router(controlnet_routes(controlnets, lambda: catalog.current))  # sd-webui-controlnet's routes
    upscalers = upscalers or UpscalerCatalog()
    app.include_router(listings(flags or {}, upscalers.models))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        described = [describe_error(error) for error in exc.errors()]
        return JSONResponse(status_code=422, content={
            "detail": "; ".join(message for _, message in described),
            "errors": [{"field": field, "message": message} for field, message in described]})

    @app.exception_handler(RequestError)
    async def unsupported_request(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": exc.message,
                                                      "errors": [{"field": exc.field, "message": exc.message}]})

    def sampler_settings() -> dict[str, Any]:
        """The UI's sampler settings as POST /sdapi/v1/options last set them (difflab.serve.settings)."""
        return {key: settings[key] for key in SAMPLER_SETTINGS}

    async def load(title: str, field: str) -> ServedModel:
        return await asyncio.to_thread(catalog.load, catalog.find(title, field), field)

    async def queued(job: Job, run) -> Any:
        try:
            future = worker.submit(job, run)
        except QueueFull as full:
            raise HTTPException(503, str(full), headers={"Retry-After": str(full.retry_after)}) from None
        return await asyncio.wrap_future(future)

    async def served_by(body: Txt2ImgRequest) -> ServedModel:
        """The model a request's override_settings names, else the current one."""
        checkpoint = (body.override_settings or {}).get(MODEL_SETTING)
        field = f"override_settings.{MODEL_SETTING}"
        return catalog.current if checkpoint is None else await load(str(checkpoint), field)

    async def generated(body: Txt2ImgRequest, served: ServedModel, plan: Any, loras: Any, lora_warnings: list[str],
                        answer: Callable[[Any, Job], dict]) -> dict:
        """Queue answer(plan, job) for a checked plan (txt2img's or img2img's) with the request's LoRAs (`loras`, from
        adapters.take) applied; an overriding model stays loaded if the body asks."""

        def run(job: Job) -> dict:
            with adapters.applied(served, loras) as skipped:
                result = answer(replace(plan, warnings=(*plan.warnings, *lora_warnings, *skipped)), job)
            if not body.override_settings_restore_afterwards:
                catalog.current = served
            return result

        return await queued(plan.job(), run)

    @app.post("/sdapi/v1/txt2img", response_model=GenerationResponse, responses=ERRORS)
    async def txt2img(body: Txt2ImgRequest) -> dict:
        """Generate batch_size * n_iter images; image i uses seed + i, so a seed reproduces its image exactly."""
        served = await served_by(body)
        prompt, loras, lora_warnings = adapters.take(body.prompt, served)  # <lora:NAME:M> tags out of the prompt
        plan = plan_txt2img(body.model_copy(update={"prompt": prompt}), served, strict_names, controlnets, upscalers,
                            sampler_settings(), precision)
        refiner = None if body.refiner_checkpoint is None else await load(body.refiner_checkpoint, "refiner_checkpoint")
        hires_model = None
        if body.enable_hr and body.hr_checkpoint_name not in (None, "", SAME_CHECKPOINT):
            hires_model = await load(body.hr_checkpoint_name, "hr_checkpoint_name")
            if loras and hires_model.path != served.path:
                lora_warnings = [*lora_warnings, "hr_checkpoint_name's model runs the second pass without the "
                                                 "prompt's LoRAs"]
        plan = await asyncio.to_thread(with_stages, plan, refiner, upscalers, strict_names, hires_model)
        return await generated(body, served, plan, loras, lora_warnings, run_plan)

    @app.post("/sdapi/v1/img2img", response_model=GenerationResponse, responses=ERRORS)
    async def img2img(body: Img2ImgRequest) -> dict:
        """Edit init_images (img2img), or only inside `mask` (inpainting); image i uses seed + i, as txt2img."""
        served = await served_by(body)
        prompt, loras, lora_warnings = adapters.take(body.prompt, served)  # <lora:NAME:M> tags out of the prompt
        edit = await asyncio.to_thread(plan_img2img, body.model_copy(update={"prompt": prompt}), served, strict_names,
                                       controlnets=controlnets, upscalers=upscalers, settings=sampler_settings(),
                                       precision=precision)
        return await generated(body, served, edit, loras, lora_warnings, run_img2img)

    @app.get("/sdapi/v1/samplers", response_model=list[SamplerItem])
    async def samplers() -> list[dict]:
        """The sampler names this server accepts, with the difflab sampler and grid behind each (and, as the UI lists
        it, the schedule of those with one of their own)."""
        return [{"name": e.name, "aliases": list(e.aliases),
                 "options": {**({} if e.scheduler is None else {"scheduler": e.scheduler}),
                             "difflab_sampler": e.sampler, "grid": e.grid}}
                for e in offered_samplers()]

    @app.get("/sdapi/v1/sd-models", response_model=list[ModelItem])
    async def sd_models() -> list[dict]:
        """The checkpoints: the one the server started with, those in --models-dir, the bundled ones."""
        return [{"title": c.title, "model_name": c.name, "hash": c.short_hash, "sha256": c.sha256,
                 "filename": str(c.path)} for c in catalog.checkpoints]

    @app.post("/sdapi/v1/refresh-checkpoints")
    async def refresh_checkpoints() -> None:
        """Rescan --models-dir."""
        await asyncio.to_thread(catalog.refresh)

    @app.get("/sdapi/v1/options")
    async def options() -> dict:
        """The subset of the UI's options that describes this server."""
        current = catalog.current
        return {"sd_model_checkpoint": current.title, "sd_checkpoint_hash": current.sha256, "samples_format": "png",
                **settings}

    @app.post("/sdapi/v1/options", responses=ERRORS)
    async def set_options(response: Response, body: Annotated[dict[str, Any], Body()]) -> None:
        """Apply the options difflab has: sd_model_checkpoint (switched on the job queue, between requests) and
        live_previews_enable; the header X-Difflab-Ignored names the others, which are ignored."""
        if "live_previews_enable" in body and not isinstance(body["live_previews_enable"], bool):
            raise RequestError("live_previews_enable", f"live_previews_enable must be true or false, got "
                                                       f"{body['live_previews_enable']!r}")
        checked = checked_settings(body)  # all checked before any is applied
        ignored = [key for key in body if key not in OPTIONS_APPLIED]
        if ignored:
            response.headers["X-Difflab-Ignored"] = ", ".join(ignored)
        if MODEL_SETTING in body:
            switched = await load(str(body[MODEL_SETTING]), MODEL_SETTING)
            await queued(Job(1, 1, 0, kind="options"), lambda job: setattr(catalog, "current", switched))
        settings.update({key: body[key] for key in body if key in settings}, **checked)

    @app.get("/sdapi/v1/progress", response_model=ProgressResponse)
    async def progress(skip_current_image: bool = False) -> dict:
        """The running request's progress, with a preview of its first image unless skip_current_image."""
        job, waiting = worker.running()
        state = ProgressState(interrupted=bool(job and job.interrupted), skipped=bool(job and job.skipped),
                              job=job.kind if job else "", job_count=job.job_count if job else 0,
                              job_no=job.job_no if job else 0, sampling_step=job.step if job else 0,
                              sampling_steps=job.steps if job else 0, queued=waiting)
        preview = None if job is None or skip_current_image or not settings["live_previews_enable"] else job.preview
        return {"progress": job.fraction if job else 0.0, "eta_relative": job.seconds_left() if job else 0.0,
                "state": state, "current_image": None if preview is None else png_base64(to_uint8(preview[None])[0])}

    @app.post("/internal/progress", response_model=TaskProgressResponse)
    async def task_progress(body: TaskProgressRequest) -> dict:
        """One request's progress by its force_task_id, as the web UI's own page polls it."""
        job, place, completed = worker.task(body.id_task)
        if job is None or job.started is None:
            return {"active": False, "queued": place is not None, "completed": completed, "id_live_preview": -1,
                    "textinfo": f"In queue: {place}" if place is not None else "Waiting..."}
        fresh = body.live_preview and job.preview is not None and job.preview_id != body.id_live_preview
        live = f"data:image/png;base64,{png_base64(to_uint8(job.preview[None])[0])}" if fresh else None
        return {"active": True, "queued": False, "completed": False, "progress": job.fraction,
                "eta": job.seconds_left(), "live_preview": live, "id_live_preview": job.preview_id,
                "textinfo": f"step {job.step}/{job.steps}, batch {job.job_no + 1}/{job.job_count}"}

    @app.post("/sdapi/v1/interrupt")
    async def interrupt() -> dict:
        """Stop the running request after its current step; it answers with the batches already finished."""
        return {"interrupted": worker.interrupt()}

    @app.post("/sdapi/v1/skip")
    async def skip() -> dict:
        """Drop the running request's current batch after its current step and go on with the next."""
        return {"skipped": worker.skip()}

    @app.post("/sdapi/v1/png-info", response_model=PngInfoResponse, responses=ERRORS)
    async def png_info(body: PngInfoRequest) -> dict:
        """An image's `parameters` text, its other text chunks, and the text parsed into fields."""
        text, items = read_png_text(body.image)
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}

    @app.get("/difflab/v1/model", response_model=ModelInfo)
    async def model_info() -> dict:
        """What the web page needs: conditioning, class names, image size and the default guidance scale."""
        current = catalog.current
        return {"name": current.name, "conditioning": current.conditioning, "class_names": current.class_names,
                "width": current.width, "height": current.height, "channels": current.channels,
                "default_cfg_scale": default_cfg_scale(current)}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
