"""The Ray Serve application: a FastAPI ingress deployment that batches requests into the model.

One deployment does it all per replica: read and check the request, decode and preprocess it in a
worker thread, queue it into the replica's `Batcher` (serve/batcher.py: the next batch forms when
the model is free, from what is queued then), and in the batcher's one worker thread run the
batch's forward pass, then restore and encode each request's mask (the event loop keeps accepting
and decoding requests meanwhile, so the next batch fills while one runs). Decoding takes turns on a
semaphore of the replica's CPUs and masks are restored one at a time, so concurrent requests cannot
stack up decoded images in memory; a failure inside the batch answers 500 to its own request only.
The checkpoint comes through `user_config` (serve/settings.py): `reconfigure` checks the whole
config, loads a new checkpoint beside the old and swaps only once it has run a warm-up pass; if
anything fails, nothing of the new config applies, the old model keeps serving and GET /v1/health
and GET /v1/model say why (without paths: serve/public.py). Entry points: `build_app(...)`
(Python, `busnet serve`) and `app_builder(args)` (the import path in serve/config.yaml, i.e.
`serve deploy` and KubeRay).
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from ray import serve
from starlette.datastructures import MutableHeaders

from models.model_card import data_summary
from models.preprocess import ImageError
from serve.batcher import Batcher
from serve.body import ACCEPTED, BadRequest, query_frame, read_image_bytes
from serve.ingress import current_ingress
from serve.predictor import LoadedModel, Loader, answer_batch, load_model, prepare, preview
from serve.public import redact_paths
from serve.settings import DEFAULT_BATCH_WAIT_S, DEFAULT_MAX_BATCH_SIZE, ServeSettings

logger = logging.getLogger("ray.serve")
DEPLOYMENT_NAME = "busnet"
APP_NAME = "busnet"

api = FastAPI(
    title="busnet",
    version="1",
    description="Hybrid-MT-ESTAN on breast ultrasound: benign/malignant probability and the "
    "lesion mask at the input image's own size.",
    # FastAPI's /docs and /redoc load their scripts from a CDN at a floating version: a page that
    # an offline hospital network shows blank and that runs code nobody pinned. The API's
    # description stays at /openapi.json (any OpenAPI viewer reads it).
    docs_url=None,
    redoc_url=None,
)
# Every answer, the viewer's pages included: scripts, styles and requests from this origin only
# (the viewer's masks are data: URLs, its uploads blob: URLs), never framed, types never sniffed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response, as a plain ASGI middleware: FastAPI's
    `@app.middleware("http")` (Starlette's BaseHTTPMiddleware) runs each request through an extra task
    and memory stream, about 2% of a busy replica's CPU (py-spy, `busnet bench serve`)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


api.add_middleware(SecurityHeaders)


PREDICT_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "frame",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
            "description": "the frame of a multi-frame DICOM (1 = the first, the default)",
        }
    ],
    "requestBody": {
        "required": True,
        "description": ACCEPTED,
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/bmp": {"schema": {"type": "string", "format": "binary"}},
            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    },
}
ERROR_DOC = {"content": {"application/json": {"example": {"error": "why"}}}}
BAD_INPUT_DOC: dict[int | str, dict[str, Any]] = {400: ERROR_DOC, 413: ERROR_DOC, 415: ERROR_DOC}
T = TypeVar("T")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def rejected(exc: BadRequest | ImageError) -> JSONResponse:
    """Bad input: logged without its bytes, answered with its status and why."""
    logger.info("rejected request: %s %s", exc.status, exc)
    return error(exc.status, str(exc))


@api.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: logged in the replica, a plain 500 to the client, no traceback."""
    logger.error("unexpected %s on %s: %s", type(exc).__name__, request.url.path, exc)
    return error(500, "internal error; the replica log has the details")


VIEWER = Path(__file__).with_name("viewer")
api.mount("/viewer", StaticFiles(directory=VIEWER), name="viewer")


@api.get("/", include_in_schema=False)
async def viewer() -> FileResponse:
    """The browser viewer (serve/viewer/): static HTML/CSS/JS that calls this API, nothing to build."""
    return FileResponse(VIEWER / "index.html")


class BatchStats:
    """How many requests each batch carried: the evidence that batching works."""

    def __init__(self) -> None:
        self.sizes: Counter[int] = Counter()

    def record(self, size: int) -> None:
        self.sizes[size] += 1

    def to_dict(self) -> dict:
        batches = sum(self.sizes.values())
        requests = sum(size * count for size, count in self.sizes.items())
        return {
            "requests": requests,
            "batches": batches,
            "mean_batch_size": requests / batches if batches else None,
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


def replica_cpus() -> int:
    """Torch threads = the CPUs Ray reserved for this replica (at least one)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, round(cpus))


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class BusnetService:
    """One replica: the loaded model, its live settings, and batch statistics."""

    def __init__(self, loader: Loader | None = None) -> None:
        if loader is None:
            from models import load_checkpoint as loader
        self._loader = loader
        self._threads = replica_cpus()
        torch.set_num_threads(self._threads)
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._loaded: LoadedModel | None = None
        self._settings: ServeSettings | None = None
        self._load_error: dict | None = None
        self._stats = BatchStats()
        self._batcher = Batcher(answer_batch, DEFAULT_MAX_BATCH_SIZE, DEFAULT_BATCH_WAIT_S, self._stats.record)
        self._swap = asyncio.Lock()
        self._decoding = asyncio.Semaphore(self._threads)

    async def reconfigure(self, user_config: dict) -> None:
        """Apply a new user_config whole or not at all; load the checkpoint if it (or the precision) changed."""
        async with self._swap:
            try:
                settings = ServeSettings.from_user_config(user_config)
                loaded = self._loaded
                if loaded is None or (settings.checkpoint, settings.precision) != (
                    loaded.uri,
                    self._settings.precision,
                ):
                    logger.info("loading checkpoint %s", settings.checkpoint)
                    loaded = await asyncio.to_thread(
                        load_model, settings.checkpoint, self._loader, self._device, settings.precision
                    )
            except Exception as exc:  # nothing of it applies; the old model, if any, keeps serving
                reason = f"{type(exc).__name__}: {exc}"
                self._load_error = {"error": redact_paths(reason), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                logger.error(
                    "user_config rejected, %s: %s",
                    "keeping the model being served" if self._loaded else "no model to serve",
                    reason,
                )
                if self._loaded is None:
                    raise RuntimeError(f"cannot serve: {reason}") from None
                return
            if loaded is not self._loaded:
                logger.info("serving %s from %s", loaded.info, settings.checkpoint)
            self._batcher.max_batch_size = settings.max_batch_size
            self._batcher.wait_s = settings.batch_wait_timeout_s
            self._loaded, self._settings, self._load_error = loaded, settings, None

    def check_health(self) -> None:
        if self._loaded is None:
            raise RuntimeError("no model loaded")

    async def _decode(self, request: Request, settings: ServeSettings, work: Callable[[bytes, int | None], T]) -> T:
        """The body (by the replica's limits) and `?frame=N` through `work` (the decoding) in a worker
        thread, taking turns on the decode semaphore; BadRequest / ImageError for bad input."""
        frame = query_frame(request.query_params.multi_items())
        data = await read_image_bytes(
            request.headers.get("content-type"),
            request.headers.get("content-length"),
            request.stream(),
            settings.max_image_bytes,
        )
        async with self._decoding:
            return await asyncio.to_thread(work, data, frame)

    @api.post("/v1/predict", openapi_extra=PREDICT_DOC, responses=BAD_INPUT_DOC)
    async def predict(self, request: Request) -> Any:
        """Classify one image (or one frame of a DICOM: `?frame=N`) and segment its lesion."""
        loaded, settings = self._loaded, self._settings
        try:
            with self._batcher.expecting():
                prepared = await self._decode(
                    request, settings, lambda data, frame: prepare(data, loaded, settings.max_image_pixels, frame)
                )
        except (BadRequest, ImageError) as exc:
            return rejected(exc)
        # an exception is this request's 500 (see _internal_error); its batch-mates get theirs
        return await self._batcher.submit((loaded, prepared))

    @api.post(
        "/v1/preview",
        openapi_extra=PREDICT_DOC,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **BAD_INPUT_DOC},
    )
    async def preview_image(self, request: Request) -> Response:
        """The image (or DICOM frame `?frame=N`) as the service decodes it, as an 8-bit PNG: the
        viewer's base layer for files a browser cannot decode (DICOM)."""
        settings = self._settings
        try:
            png = await self._decode(
                request, settings, lambda data, frame: preview(data, settings.max_image_pixels, frame)
            )
        except (BadRequest, ImageError) as exc:
            return rejected(exc)
        return Response(png, media_type="image/png")

    @api.get("/v1/health")
    async def health(self) -> Any:
        """200 while a model is loaded; `last_load_error` says why a swap was refused."""
        if self._loaded is None:
            return error(503, "no model loaded")
        return {"status": "ok", "model": self._loaded.info, "last_load_error": self._load_error}

    @api.get("/v1/model")
    async def model(self) -> dict:
        """The served checkpoint's config, metrics and lineage (paths redacted), the replica's settings
        (not the checkpoint's location) and batch stats."""
        loaded = self._loaded
        config = {k: v for k, v in loaded.config.items() if k not in ("metrics", "lineage")}
        settings = {k: v for k, v in self._settings.to_user_config().items() if k != "checkpoint"}
        return {
            "model": loaded.info,
            "config": redact_paths(config),
            "metrics": loaded.config.get("metrics", {}),
            "lineage": redact_paths(loaded.config.get("lineage", {})),
            "data": data_summary(loaded.config.get("lineage", {})),
            "serving": {
                **settings,
                "device": str(loaded.device),
                "dtype": str(loaded.dtype).removeprefix("torch."),
                "torch_threads": self._threads,
                "ingress": current_ingress(),
                "replica": serve.get_replica_context().replica_tag,
            },
            "stats": self._stats.to_dict(),
            "last_load_error": self._load_error,
        }


def build_app(
    checkpoint_uri: str | None,
    *,
    replicas: int = 1,
    autoscale: bool = False,
    max_replicas: int = 4,
    gpu: bool = False,
    num_cpus: float = 1,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_S * 1000,
    precision: str = "auto",
    loader: Loader | None = None,
    **limits: int,
) -> serve.Application:
    """The application for `serve.run`. `limits` are max_image_bytes / max_image_pixels.

    max_ongoing_requests is two batches, so one batch fills while the other runs; autoscaling
    targets one batch in flight per replica. Redeploys (a change of code or options) start new
    replicas before stopping old ones (max_surge_percent=100), so they drop nothing either.
    """
    settings = ServeSettings(
        checkpoint=checkpoint_uri,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_ms / 1000,
        precision=precision,
        **limits,
    )
    if checkpoint_uri is not None:
        settings.validate()
    scaling: dict[str, Any] = {"num_replicas": replicas}
    if autoscale:
        scaling = {
            "autoscaling_config": {
                "min_replicas": 1,
                "max_replicas": max_replicas,
                "target_ongoing_requests": max_batch_size,
            }
        }
    deployment = BusnetService.options(
        user_config=settings.to_user_config(),
        max_ongoing_requests=2 * max_batch_size,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": 1 if gpu else 0},
        max_surge_percent=100,
        **scaling,
    )
    return deployment.bind(loader)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Builder for serve/config.yaml's import path; `args` are build_app's keyword arguments.

    With no `checkpoint` argument the checkpoint must come from the deployment's user_config in
    the config file (the usual case: that is what a RayService edit swaps in place).
    """
    args = dict(args or {})
    return build_app(args.pop("checkpoint", None), **args)
