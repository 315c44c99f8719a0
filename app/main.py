"""The FastAPI app: `create_app(settings)`, also a factory for `uvicorn --factory app.main:create_app`.

Creating the app is cheap; the model is loaded and warmed up by the lifespan, before the server
takes requests. If it cannot be loaded, the server logs one line naming the path and the problem
and exits with a non-zero status.
"""

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.logging import DefaultFormatter

from app.api import health, metrics, model, predict, report, tfserving, v2
from app.api import page as web_page
from app.api.admission import Door, ShedWhenFull, inference_routes
from app.api.api_keys import ApiKeys, KeyRing, document_api_keys
from app.api.body_limit import BodyBudget, RequestBodyLimit
from app.api.dataplane import DataPlane
from app.api.metrics import Metrics, MetricsMiddleware
from app.api.problems import document_problems, register_problem_handlers
from app.errors import ModelLoadError
from app.runtime.repository import ModelRepository
from app.settings import Settings, load_settings

logger = logging.getLogger(__name__)

ROUTERS = (
    predict.router,
    model.router,
    report.router,
    health.router,
    metrics.router,
    tfserving.router,
    v2.router,
    web_page.router,  # GET /: the page to try the model in a browser
)
# The endpoints that run the model, whose requests the door may shed: one per face.
INFERENCE_ENDPOINTS = (predict.predict, tfserving.predict, v2.infer)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    dataplane: DataPlane = app.state.dataplane
    models = await asyncio.to_thread(ModelRepository.start, settings, app.state.metrics.observe_batch)
    app.state.metrics.watch(models)
    dataplane.repository = models
    logger.info(
        "Ready to serve %s version(s) %s",
        models.name,
        ", ".join(str(version) for version in models.available()),
    )
    try:
        yield
    finally:
        dataplane.draining = True
        await asyncio.to_thread(models.close)
        dataplane.repository = None


class OneLineStartupFailure:
    """Log a model that cannot be loaded as one line rather than a traceback.

    Starlette reports a failed lifespan to the server with the whole traceback, which buries the
    one thing an operator needs: which path, and what is wrong with it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            error = sys.exception()  # Starlette sends the failure while handling the exception
            if message["type"] == "lifespan.startup.failed" and isinstance(error, ModelLoadError):
                message = {**message, "message": f"Cannot serve the model: {error}"}
            await send(message)

        await self.app(scope, receive, send_one_line)


def configure_logging(level: str) -> None:
    """Give the `app` loggers uvicorn's look, whether run by `python -m app` or by uvicorn's command."""
    app_logger = logging.getLogger("app")
    app_logger.setLevel(level)
    if not app_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
        app_logger.addHandler(handler)
        app_logger.propagate = False


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service, configured by `settings` (default: from the environment)."""
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="Inception V2 image classifier",
        summary="Classifies images with an Inception V2 SavedModel, batching concurrent requests.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics(settings.max_batch_size)
    app.state.dataplane = DataPlane(settings)
    for router in ROUTERS:
        app.include_router(router)
    keys = KeyRing(settings.api_key_list(), settings.metrics_require_key)
    # Shedding is decided at the door: by the HTTP protocol (app/connections.py) or the middleware.
    routes = inference_routes([route for router in ROUTERS for route in router.routes], INFERENCE_ENDPOINTS)
    budget = BodyBudget(settings.max_body_bytes_held, settings.max_upload_bytes)
    app.state.door = Door(app.state, keys, routes, budget)
    register_problem_handlers(app)
    app.add_middleware(
        RequestBodyLimit,
        max_bytes=settings.max_upload_bytes,
        timeout_s=settings.body_timeout_s,
        budget=budget,
    )
    app.add_middleware(ShedWhenFull, door=app.state.door)
    app.add_middleware(ApiKeys, keys=keys)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outside: it sees the 413s too
    app.add_middleware(OneLineStartupFailure)
    document_problems(app)
    document_api_keys(app, keys)
    return app
