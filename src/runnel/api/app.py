"""``create_app(settings)``: builds the services once, owns their lifetimes, mounts routes."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from runnel import __version__, logs
from runnel.accounts.service import AccountService
from runnel.accounts.throttle import parse_window
from runnel.api import (
    accounts,
    conversations,
    errors,
    live,
    openai,
    streams,
    system,
    ui_chat,
    webapp,
)
from runnel.api.deps import Services
from runnel.api.middleware import (
    LocalHostOnlyMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
)
from runnel.api.signals import drain_on_signals
from runnel.api.streaming import HandOff
from runnel.broker import Broker
from runnel.broker.memory import MemoryBroker
from runnel.broker.redis import RedisBroker
from runnel.chat import ChatService
from runnel.followups import Followups
from runnel.generation import GenerationService
from runnel.metrics import Metrics
from runnel.providers.registry import Registry
from runnel.quotas import Quotas, parse_rate
from runnel.settings import Settings
from runnel.store.sql import Store

log = logging.getLogger(__name__)
# what a page of another origin may read of an answer
CORS_EXPOSED = [
    "location",
    "preference-applied",
    "retry-after",
    "x-request-id",
    "x-runnel-stream-id",
    "x-vercel-ai-ui-message-stream",
]


class RunnelApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack (error handling, the middlewares, the router) under
        ``HandOff``, which sends SSE bodies from outside it."""
        return HandOff(super().build_middleware_stack())


def create_app(settings: Settings) -> FastAPI:
    """Raises ``ValueError`` for a configuration that cannot work."""
    registry = Registry.from_settings(settings)
    if settings.rate_limit:
        parse_rate(settings.rate_limit)
    parse_window(settings.login_limit_account, "login_limit_account")
    parse_window(settings.login_limit_address, "login_limit_address")
    # one per app, before it serves: the Host check asks it whether the server is local
    holder: list[AccountService] = []

    def local_mode() -> bool:
        return not holder or holder[0].known_local

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.database, pool_size=settings.database_pool_size)
        await store.open()
        broker: Broker
        if settings.redis_url:
            redis_broker = RedisBroker(
                settings.redis_url,
                settings.stream_retention,
                settings.redis_max_connections,
                longest_wait=settings.heartbeat_interval,
            )
            broker = redis_broker
        else:
            # only this process generates: whatever was streaming when it stopped is over
            recovered = await store.interrupt_all_streaming()
            if recovered:
                log.warning("marked %d unfinished replies as interrupted", recovered)
            broker = MemoryBroker(settings.stream_retention)
        # built here, not in create_app: a worker must have PROMETHEUS_MULTIPROC_DIR first
        metrics = Metrics.from_environment()
        generations = GenerationService(settings, store, broker, metrics)
        if settings.redis_url:
            await redis_broker.start(generations.cancel)
        quotas = Quotas(
            settings.rate_limit,
            settings.max_streams_per_user,
            settings.output_tokens_per_day,
            generations.user_streams,
            store.usage_of,
            settings.redis_url,
        )
        chat = ChatService(settings, store, broker, generations, registry, quotas, metrics)
        followups = Followups(settings, store, broker, registry, generations.router, metrics)
        generations.on_reply_complete = followups.reply_completed
        account_service = AccountService(settings, store)
        await account_service.have_accounts()
        holder[:] = [account_service]
        app.state.runnel = Services(
            settings,
            store,
            broker,
            registry,
            generations,
            chat,
            account_service,
            metrics,
            followups=followups,
        )
        generations.start_loops()
        draining: list[asyncio.Task[None]] = []

        async def drain() -> None:
            await generations.shutdown(settings.shutdown_grace)
            # the feeds carry the generations' last events, then end
            app.state.runnel.feeds.close_all()

        def start_drain() -> None:
            if not draining:
                draining.append(asyncio.create_task(drain()))

        restore_signals = drain_on_signals(start_drain)
        try:
            yield
        finally:
            restore_signals()
            start_drain()
            await draining[0]
            await followups.aclose()
            await registry.aclose()
            await broker.aclose()
            await store.close()
            metrics.close()

    app = RunnelApp(
        title="Runnel",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        responses=errors.DOCUMENTED,
    )
    errors.install(app)
    app.include_router(streams.router)
    app.include_router(conversations.router)
    app.include_router(accounts.router)
    app.include_router(system.router)
    app.include_router(openai.router)
    app.include_router(ui_chat.router)
    app.include_router(live.router)
    webapp.mount(app)
    app.add_middleware(LocalHostOnlyMiddleware, allowed=settings.hosts, local=local_mode)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware)
    if settings.origins:
        # outermost: a preflight is answered before anything else looks at it
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(settings.origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "last-event-id"],
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )
    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``runnel serve --workers N`` (settings from the
    environment, as the parent read them)."""
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)
    settle_heap()
    return app


# gc's third threshold: a full collection at most every 100 collections of the middle
# generation (Python's default: 10). See settle_heap.
FULL_COLLECTION_THRESHOLD = 100


def settle_heap() -> None:
    """Move everything allocated so far (the imported SDKs, FastAPI, the app) out of the
    garbage collector's sight, and make full collections rarer. A full collection otherwise
    walks those hundreds of thousands of long-lived objects and stops the event loop for
    ~100 ms, a gap every stream sees; frozen, they are only freed by reference counting,
    like everything else. What remains are the objects of live streams: with Python's
    default thresholds a full collection still ran every few seconds at 500 streams, took
    50–100 ms and found nothing to free (stream objects are freed by reference counting),
    so it runs ten times less often. Called once by ``runnel serve``, just before it
    serves."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
