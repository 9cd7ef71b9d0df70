"""The FastAPI app: the AUTOMATIC1111-compatible routes under /sdapi/v1, the page at /, OpenAPI docs at /docs."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from difflab import __version__
from difflab.images import to_uint8
from difflab.pipelines.dialect import RequestError
from difflab.pipelines.samplers import offered_samplers
from difflab.serve.a1111 import png_base64
from difflab.serve.generation import plan_txt2img, run_plan
from difflab.serve.middleware import BasicAuth, BodyLimit
from difflab.serve.model import ServedModel
from difflab.serve.schemas import (MAX_BODY_BYTES, GenerationResponse, Img2ImgRequest, ModelInfo, ModelItem,
                                   ProgressResponse, ProgressState, SamplerItem, Txt2ImgRequest, describe_error)
from difflab.serve.worker import QueueFull, Worker

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
- **Refused with 422**, naming the field: `cfg_scale` below 1 on a conditional model, `cfg_scale` other than 1 on an
  unconditional model, a `negative_prompt` that is not a class of a class-only model, `width`/`height` other than
  the model's, unknown sampler or scheduler names, and img2img / inpainting (no such pipeline yet).
- Other fields of that API are accepted; any that asks for something is listed in `info.warnings` as ignored.
- **Seeds.** Image i of a request uses `seed + i`, so a seed and the same settings give byte-identical PNGs.
- **Load.** One generation runs at a time; a few more wait; beyond that the answer is 503 with Retry-After.
  POST /sdapi/v1/interrupt stops the running request, which answers with the batches (`n_iter`) already done.
"""
CONDITIONING_WORDS = {"none": "unconditional", "class": "class-conditional", "text": "text prompts"}
ERRORS = {422: {"description": "a field out of range, or something the model cannot do; `detail` names the field"},
          503: {"description": "the queue is full; retry after the Retry-After header's seconds"}}


def create_app(model: ServedModel, *, auth: tuple[str, str] | None = None, queue_size: int = 4) -> FastAPI:
    """An app serving `model`: one generation at a time, `queue_size` more may wait, the rest get 503."""
    worker = Worker(queue_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.shutdown()

    app = FastAPI(title="difflab", version=__version__, lifespan=lifespan,
                  description=f"Serving model **{model.name}** ({model.width}x{model.height}, "
                              f"{CONDITIONING_WORDS[model.conditioning]}). "
                              "A subset of the AUTOMATIC1111 web UI API; the web page is at /.\n\n" + USAGE)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if auth is not None:
        app.add_middleware(BasicAuth, user=auth[0], password=auth[1])  # outermost: checked before the body is read

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

    @app.post("/sdapi/v1/txt2img", response_model=GenerationResponse, responses=ERRORS)
    async def txt2img(body: Txt2ImgRequest) -> dict:
        """Generate batch_size * n_iter images; image i uses seed + i, so a seed reproduces its image exactly."""
        plan = plan_txt2img(body, model)
        try:
            future = worker.submit(plan.job(), lambda job: run_plan(plan, model, job))
        except QueueFull as full:
            raise HTTPException(503, str(full), headers={"Retry-After": str(full.retry_after)}) from None
        return await asyncio.wrap_future(future)

    @app.post("/sdapi/v1/img2img", response_model=GenerationResponse, responses=ERRORS)
    async def img2img(body: Img2ImgRequest) -> dict:
        """Not available yet: difflab has no image-to-image or inpainting pipeline; answers 422 after validation."""
        raise RequestError("init_images", "img2img and inpainting need an image-to-image pipeline, which difflab "
                                          "does not have yet; use /sdapi/v1/txt2img")

    @app.get("/sdapi/v1/samplers", response_model=list[SamplerItem])
    async def samplers() -> list[dict]:
        """The sampler names this server accepts, with the difflab sampler and grid behind each."""
        return [{"name": e.name, "aliases": list(e.aliases), "options": {"difflab_sampler": e.sampler, "grid": e.grid}}
                for e in offered_samplers()]

    @app.get("/sdapi/v1/sd-models", response_model=list[ModelItem])
    async def sd_models() -> list[dict]:
        return [{"title": f"{model.name} [{model.short_hash}]", "model_name": model.name, "hash": model.short_hash,
                 "sha256": model.sha256, "filename": model.filename}]

    @app.get("/sdapi/v1/options")
    async def options() -> dict:
        """The read-only subset of the UI's options that describes this server."""
        return {"sd_model_checkpoint": f"{model.name} [{model.short_hash}]", "sd_checkpoint_hash": model.sha256,
                "samples_format": "png", "live_previews_enable": True}

    @app.get("/sdapi/v1/progress", response_model=ProgressResponse)
    async def progress(skip_current_image: bool = False) -> dict:
        """The running request's progress, with a preview of its first image unless skip_current_image."""
        job, queued = worker.running()
        state = ProgressState(interrupted=bool(job and job.interrupted), job="txt2img" if job else "",
                              job_count=job.job_count if job else 0, job_no=job.job_no if job else 0,
                              sampling_step=job.step if job else 0, sampling_steps=job.steps if job else 0,
                              queued=queued)
        preview = None if job is None or skip_current_image else job.preview
        return {"progress": job.fraction if job else 0.0, "eta_relative": job.seconds_left() if job else 0.0,
                "state": state, "current_image": None if preview is None else png_base64(to_uint8(preview[None])[0])}

    @app.post("/sdapi/v1/interrupt")
    async def interrupt() -> dict:
        """Stop the running request after its current step; it answers with the batches already finished."""
        return {"interrupted": worker.interrupt()}

    @app.get("/difflab/v1/model", response_model=ModelInfo)
    async def model_info() -> dict:
        """What the web page needs: conditioning, class names and image size."""
        return {"name": model.name, "conditioning": model.conditioning,
                "class_names": model.class_names, "width": model.width, "height": model.height,
                "channels": model.channels}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
