"""``create_app(settings)``: the FastAPI application and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from edgefleet import __version__
from fleet_server.api import api_router, broker_router, root_router
from fleet_server.api.audit import AuditMiddleware
from fleet_server.api.errors import install_error_handlers
from fleet_server.api.limits import BodyLimitMiddleware
from fleet_server.dashboard import router as dashboard_router
from fleet_server.runtime import Runtime
from fleet_server.settings import ServerSettings


def create_app(settings: ServerSettings) -> FastAPI:
    """Build the app; nothing starts until the lifespan runs (uvicorn or ``TestClient``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        try:
            await run_in_threadpool(runtime.start)
        except BaseException as err:
            app.state.startup_error = f"{type(err).__name__}: {err}"
            await run_in_threadpool(runtime.stop)
            raise
        app.state.runtime = runtime
        try:
            yield
        finally:
            app.state.runtime = None
            await run_in_threadpool(runtime.stop)

    app = FastAPI(
        title="EdgeFleet fleet server",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = None
    app.state.startup_error = None
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware)
    # Added last, so outermost: it also records the body limit's 413 refusals.
    app.add_middleware(AuditMiddleware)
    app.include_router(root_router)
    app.include_router(api_router)
    app.include_router(broker_router)
    app.include_router(dashboard_router)
    return app
