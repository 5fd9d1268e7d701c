"""Wiring of the gateway: settings, middleware, routers, lifespan (bus, database), processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from edge.client import ServerUnreachable
from schemas import logs
from schemas.messages import (
    ErrorBody,
)
from services import __version__
from services.common.auth import AuditLog, TokenStore
from services.common.config import CommonSettings
from services.common.db import open_pool
from services.common.metrics import Metrics
from services.common.runtime import EXIT_UNREACHABLE, open_bus
from services.gateway import raw_history, rules
from services.gateway.adapters import (
    AlertQueries,
    AlertRulesKv,
    BusPort,
    CycleQueries,
    Database,
    Datasets,
)
from services.gateway.auth import Authenticator, Oidc
from services.gateway.config import Settings
from services.gateway.errors import install as install_error_handlers
from services.gateway.history import HistoryQueries
from services.gateway.limits import OriginPolicy, RequestLimits, SecurityHeaders
from services.gateway.live import router as live_router
from services.gateway.routes import (
    alerts,
    auth,
    cycles,
    datasets,
    ingest,
    references,
    streams,
    system,
)
from services.gateway.state import DASHBOARD, IMPORT_MAX_BYTES, SERVICE, Gateway
from services.gateway.wsproto import FanoutWebSocketProtocol

ROUTERS = (
    ingest.router,
    streams.router,
    cycles.router,
    references.router,
    alerts.router,
    datasets.router,
    auth.router,
    system.router,
    live_router,
)
log = logging.getLogger(__name__)


def build_app(settings: Settings, common: CommonSettings) -> FastAPI:
    """The gateway's ASGI app; the lifespan connects to the bus and the database."""

    oidc = (
        Oidc(
            settings.oidc_issuer,
            settings.oidc_audience,
            settings.oidc_jwks_url or f"{settings.oidc_issuer.rstrip('/')}/.well-known/jwks.json",
            settings.oidc_role_claim,
        )
        if settings.oidc_issuer
        else None
    )
    if common.auth == "off":
        log.warning(
            "authentication is off (VERTAC_AUTH=off): anyone who reaches this gateway may do "
            "everything, as admin"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus = await open_bus(common, f"vertac-{SERVICE}")
        pool = await open_pool(
            common.database_url,
            retry=common.startup_retry,
            name=SERVICE,
            migrate_first=common.auto_migrate,
            service=SERVICE,
        )
        app.state.gw = Gateway(
            settings,
            await BusPort.open(bus),
            Database(pool),
            CycleQueries(pool),
            AlertQueries(pool),
            AlertRulesKv(bus.nc),
            Metrics(SERVICE),
            Datasets(pool),
            HistoryQueries(pool),
            AuditLog(pool),
            TokenStore(pool),
        )
        app.state.gw.sites = common.site_ids  # at central: the sites it shows
        app.state.auth = Authenticator(app.state.gw.tokens, common.auth == "on", oidc)
        app.state.bus = bus
        # compile the raw-history kernels in the background: the first query need not wait
        app.state.warm_up = asyncio.create_task(asyncio.to_thread(raw_history.warm_up))
        log.info("gateway ready", extra={"host": settings.host, "port": settings.port})
        try:
            yield
        finally:
            await app.state.gw.hub.close()
            await bus.close()
            await pool.close()

    app = FastAPI(
        title="VerTac gateway",
        version=__version__,
        description="REST and WebSocket API of VerTac. Bus subjects: /api/asyncapi.json.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody, "description": "The body is not valid JSON or UTF-8."},
            401: {"model": ErrorBody, "description": "No valid credential (sign in)."},
            403: {"model": ErrorBody, "description": "The role does not allow it."},
            404: {"model": ErrorBody},
            409: {
                "model": ErrorBody,
                "description": "Not in the present state; at a central VerTac, a change to a "
                "site's stream (<site>.<stream id>) is made at the site.",
            },
            413: {"model": ErrorBody, "description": "The body is over the limit."},
            422: {"model": ErrorBody},
            503: {"model": ErrorBody, "description": "The bus or the database is unavailable."},
        },
    )
    app.add_middleware(OriginPolicy, allowed=settings.cors_origins)
    app.add_middleware(SecurityHeaders, https=bool(settings.tls_certfile))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Content-Type", "Authorization"],
        )
    app.add_middleware(
        RequestLimits,
        max_body=settings.max_body_bytes,
        files={"/api/live/datasets/*/import": IMPORT_MAX_BYTES},
        small={"/api/auth/session": 16 * 1024},  # read before anyone is signed in
    )

    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    if (DASHBOARD / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=DASHBOARD / "assets"), name="assets")

    plain_openapi = app.openapi

    def openapi_with_rules() -> dict[str, Any]:
        if app.openapi_schema is None:
            rules.document(plain_openapi())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi_with_rules  # type: ignore[method-assign]
    return app


async def preflight(common: CommonSettings) -> None:
    """Fail (or wait, with startup_retry) before serving when the bus or database is down."""
    bus = await open_bus(common, f"vertac-{SERVICE}-preflight")
    await bus.close()
    pool = await open_pool(common.database_url, retry=common.startup_retry, name="preflight")
    await pool.close()


def listening_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """The gateway's listening socket. ``shared``: other gateway processes bind it too
    (SO_REUSEPORT) and the kernel spreads new connections over them; otherwise a port in use is
    an error, as it should be for a single gateway."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: FastAPI, **options: Any) -> uvicorn.Config:
    """uvicorn settings of the gateway: its own WebSocket protocol (prepared frames for the
    fan-out), no logging set-up of uvicorn's own."""
    return uvicorn.Config(app, log_config=None, ws=FanoutWebSocketProtocol, **options)


def serve_one() -> None:
    """One gateway process on the shared port."""
    settings, common = Settings(), CommonSettings()
    logs.setup(SERVICE, common.log_level, common.log_json)
    tls = (
        {"ssl_certfile": settings.tls_certfile, "ssl_keyfile": settings.tls_keyfile}
        if settings.tls_certfile
        else {}
    )
    config = uvicorn_config(build_app(settings, common), lifespan="on", backlog=2048, **tls)
    try:
        sock = listening_socket(settings.host, settings.port, shared=settings.workers > 1)
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        sys.stderr.write(
            f"vertac {SERVICE}: cannot listen on {where}: {exc.strerror} "
            "(VERTAC_GATEWAY_HOST, VERTAC_GATEWAY_PORT)\n"
        )
        sys.exit(EXIT_UNREACHABLE)
    uvicorn.Server(config).run(sockets=[sock])


def supervise_workers(count: int) -> None:
    """``count`` gateway processes on one port; a worker that dies is started again, Ctrl-C or
    SIGTERM stops them all."""
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=serve_one, name=f"gateway-{i}") for i in range(count)]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for w in workers:
        w.start()
    log.info("gateway workers started", extra={"workers": count})
    while not stopping:
        for i, w in enumerate(workers):
            if not w.is_alive() and not stopping:
                log.warning("gateway worker exited; starting it again",
                            extra={"worker": i, "exitcode": w.exitcode})  # fmt: skip
                workers[i] = ctx.Process(target=serve_one, name=f"gateway-{i}")
                workers[i].start()
        time.sleep(0.5)
    for w in workers:
        if w.is_alive():
            w.terminate()
    for w in workers:
        w.join(15)


def main() -> None:
    settings, common = Settings(), CommonSettings()
    logs.setup(SERVICE, common.log_level, common.log_json)
    try:
        asyncio.run(preflight(common))
    except ServerUnreachable as exc:
        sys.stderr.write(f"vertac {SERVICE}: {exc}\n")
        sys.exit(EXIT_UNREACHABLE)
    if settings.workers > 1:
        supervise_workers(settings.workers)
    else:
        serve_one()
