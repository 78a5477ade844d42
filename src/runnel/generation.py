"""Generations: each reply runs as a task detached from any HTTP request.

``GenerationService.start`` launches the provider call and the database writes at the same
time, and returns once both are done and the upstream accepted the request — or raises the
error that stopped it, which the HTTP layer sends as an ordinary error response. From then
on the generation appends events to its stream's log and readers follow the log; a reader
leaving changes nothing. A generation ends in exactly one recorded outcome:

    complete (stop | length | content_filter)   the provider finished, or a limit was hit
    complete (cancelled)                        ``cancel`` — the upstream request is closed
    error (code)                                the provider failed or timed out
    interrupted                                 the connection dropped, or shutdown's grace ran out

The outcome is stored first, then the terminal event is appended, so a reader that sees
the terminal event finds the final content in the store. Content is checkpointed by one
loop for all generations every ``checkpoint_interval``; the token path only appends.
Timeouts are enforced by one watchdog loop, not per token. Metrics (``runnel.metrics``) are
recorded at the start, the first token and the end, and tokens are counted by the
checkpoint loop from the log's ids: the token path has no metric work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from redis.exceptions import RedisError

from runnel import logs
from runnel.broker import Broker, StreamMeta
from runnel.broker.redis import LEASE_INTERVAL, LEASE_TTL, RedisBroker
from runnel.errors import Internal, Interrupted, Overloaded, RunnelError, StreamTimeout
from runnel.events import Complete, Error, FinishReason, Status, Usage
from runnel.ids import new_id
from runnel.metrics import Metrics, provider_of
from runnel.providers.base import ChatMessage, Finish
from runnel.providers.router import RetryPolicy, Route, RoutedStream, Router
from runnel.quotas import today
from runnel.settings import Settings
from runnel.store.records import NewMessage, ReplyOutcome
from runnel.store.sql import STORE_ERRORS, Store

log = logging.getLogger(__name__)

Phase = Literal["starting", "opening", "streaming", "finishing", "done"]
FINISH_RETRY_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
LEASE_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, RunnelError, *STORE_ERRORS)
SWEEP_EVERY = 15
SWEEP_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class Cancelled:
    """Why a generation was stopped on purpose: Stop pressed, or a limit was reached."""

    reason: FinishReason
    kept_through: int | None = None


@dataclass(slots=True)
class StartRequest:
    user_id: str
    route: Route
    prompt: Sequence[ChatMessage]
    conversation_id: str | None = None
    new_messages: Sequence[NewMessage] = ()
    replace: str | None = None
    edit: tuple[str, str] | None = None  # (a user message, its new text): drop what follows
    title: str | None = None
    remember_model: str | None = None
    stale_claim: str | None = None
    stream_id: str = field(default_factory=lambda: new_id("s"))
    message_id: str = field(default_factory=lambda: new_id("m"))
    count_usage: bool = False  # add the reply's output tokens to its user's daily usage
    max_tokens: int | None = None  # the caller's own limit, within the server's

    @property
    def model(self) -> str:
        return self.route.model_id


@dataclass(slots=True, eq=False)
class Generation:
    stream_id: str
    message_id: str
    request: StartRequest
    model: str = ""  # the model answering (a fallback may take over before the first token)
    started_at: float = field(default_factory=time.monotonic)
    phase: Phase = "starting"
    pieces: list[str] = field(default_factory=list)
    status_id: int = 0
    last_id: int = 0
    first_token_at: float | None = None
    last_token_at: float = 0.0
    tokens_counted: int = 0  # tokens already added to the metrics
    dirty: bool = False
    stop: Cancelled | RunnelError | None = None
    failure: RunnelError | None = None
    task: asyncio.Task[None] | None = None
    ready: asyncio.Future[None] | None = None

    @property
    def persisted(self) -> bool:
        return self.request.conversation_id is not None


class GenerationService:
    def __init__(self, settings: Settings, store: Store, broker: Broker, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.router = Router(
            RetryPolicy(
                attempts=settings.retry_attempts,
                base_delay=settings.retry_base_delay,
                max_delay=settings.retry_max_delay,
                budget=settings.retry_budget,
            )
        )
        self._active: dict[str, Generation] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._started = False
        self._draining = False
        # called when a stored reply completes (runnel.followups), with the user, the
        # conversation, the message, the model and the conversation's provisional title
        self.on_reply_complete: Callable[[str, str, str, str, str | None], None] | None = None

    # lifecycle

    def start_loops(self) -> None:
        """Start the watchdog and checkpoint loops; ``shutdown`` ends them.

        The service owns its tasks (the loops and one per generation) and ``shutdown``
        awaits them all. They are deliberately not in a ``TaskGroup``: a failing task must
        never cancel its siblings — one bad request must not end every stream."""
        self._started = True
        self._loops = [
            asyncio.create_task(self._watchdog_loop(), name="runnel-watchdog"),
            asyncio.create_task(self._checkpoint_loop(), name="runnel-checkpoints"),
        ]
        if isinstance(self.broker, RedisBroker):
            self._loops.append(
                asyncio.create_task(self._lease_loop(self.broker), name="runnel-leases")
            )

    async def shutdown(self, grace: float) -> None:
        """Refuse new generations, let active ones finish for ``grace`` s, then interrupt
        them (stored ``interrupted``); finally stop the loops. Safe to call twice."""
        self._draining = True
        running = [g.task for g in self._active.values() if g.task is not None]
        if running:
            await asyncio.wait(running, timeout=grace)
        for gen in list(self._active.values()):
            self._abort(gen, Interrupted("the server is shutting down"))
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        for loop_task in self._loops:
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def user_streams(self, user_id: str) -> int:
        """Replies of ``user_id`` generating now (in every process, with Redis)."""
        if isinstance(self.broker, RedisBroker):
            return await self.broker.user_streams(user_id)
        return sum(1 for g in self._active.values() if g.request.user_id == user_id)

    async def streams_of(self, user_id: str) -> list[str]:
        """The streams of ``user_id`` generating now (in every process, with Redis)."""
        if isinstance(self.broker, RedisBroker):
            return await self.broker.user_stream_ids(user_id)
        return [s for s, g in self._active.items() if g.request.user_id == user_id]

    async def is_running(self, stream_id: str) -> bool:
        """Whether ``stream_id`` is generating, here or (with Redis) in a process whose lease
        on it is alive. A conversation claimed by a stream that is not running holds a stale
        claim (its outcome could not be stored) and may be claimed again."""
        if stream_id in self._active:
            return True
        if isinstance(self.broker, RedisBroker):
            return await self.broker.alive(stream_id)
        return False

    # starting and stopping

    async def start(self, request: StartRequest) -> Generation:
        if self._draining:
            raise Overloaded("the server is shutting down; try again shortly")
        if len(self._active) >= self.settings.max_active_streams:
            raise Overloaded("the server is at its stream capacity; try again shortly")
        if not self._started:
            raise RuntimeError("GenerationService.start_loops was not called")
        stream_id, message_id = request.stream_id, request.message_id
        meta = StreamMeta(
            stream_id, request.user_id, request.conversation_id, message_id, request.model
        )
        await self.broker.create(meta)
        gen = Generation(stream_id, message_id, request, request.model)
        gen.ready = asyncio.get_running_loop().create_future()
        self._active[stream_id] = gen
        self.metrics.set_active(len(self._active))
        gen.task = asyncio.create_task(self._run(gen), name=f"generation-{stream_id}")
        self._tasks.add(gen.task)
        gen.task.add_done_callback(self._reap)
        try:
            await asyncio.shield(gen.ready)
        except asyncio.CancelledError:
            if not gen.ready.done():
                gen.ready.cancel()
            raise
        return gen

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a generation task failed", exc_info=task.exception())

    def cancel(self, stream_id: str, kept_through: int | None = None) -> bool:
        """Stop a generation of this process (idempotent). False when it is not running here."""
        gen = self._active.get(stream_id)
        if gen is None:
            return False
        if kept_through is not None and kept_through >= gen.last_id:
            kept_through = None
        self._abort(gen, Cancelled("cancelled", kept_through))
        return True

    def _abort(self, gen: Generation, stop: Cancelled | RunnelError) -> None:
        if gen.stop is not None:
            return
        gen.stop = stop
        if gen.phase in ("opening", "streaming") and gen.task is not None:
            gen.task.cancel()

    # the runner

    async def _run(self, gen: Generation) -> None:
        logs.stream_id.set(gen.stream_id)
        logs.conversation_id.set(gen.request.conversation_id)
        request = gen.request
        log.info("stream started", extra={"fields": {"model": request.model}})
        opening = asyncio.ensure_future(self._open(request))
        stream: RoutedStream | None = None
        outcome: Complete | Error
        try:
            try:
                await self._begin(gen)
            except RunnelError as exc:
                opening.cancel()
                await _close_when_opened(opening)
                await self._fail_before_start(gen, exc)
                return
            try:
                gen.phase = "opening"
                if gen.stop is not None:
                    raise asyncio.CancelledError
                stream = await opening
            except RunnelError as exc:
                outcome = self._error(gen, exc)
            else:
                gen.model = stream.model_id
                gen.status_id = gen.last_id = self.broker.append(
                    gen.stream_id,
                    Status(gen.stream_id, request.conversation_id, gen.message_id, gen.model),
                )
                _resolve(gen.ready)
                outcome = await self._relay(gen, stream)
        except asyncio.CancelledError:
            outcome = self._stopped(gen)
            if gen.stop is None:
                await self._finish_shielded(gen, outcome, stream, opening)
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception:  # a bug: record it, never leave the stream hanging
            log.exception("generation failed")
            outcome = self._error(gen, Internal("something went wrong on the server"))
        await self._finish_shielded(gen, outcome, stream, opening)

    async def _finish_shielded(
        self,
        gen: Generation,
        outcome: Complete | Error,
        stream: RoutedStream | None,
        opening: asyncio.Future[RoutedStream],
    ) -> None:
        """Close the upstream and record the outcome; a second cancel cannot cut this short."""

        async def close_and_finish() -> None:
            if stream is not None:
                await _quietly_close(stream)
            else:
                opening.cancel()
                await _close_when_opened(opening)
            await self._finish(gen, outcome)

        gen.phase = "finishing"
        await asyncio.shield(close_and_finish())

    async def _open(self, request: StartRequest) -> RoutedStream:
        began = time.monotonic()
        stream = await self.router.open(
            request.route, request.prompt, max_tokens=self._output_limit(request)
        )
        request.prompt = ()  # the router keeps it while it may still retry, then lets it go
        self.metrics.provider_opened(stream.model_id, time.monotonic() - began)
        return stream

    async def _begin(self, gen: Generation) -> None:
        request = gen.request
        if request.conversation_id is None:
            return
        await self.store.begin_reply(
            request.user_id,
            request.conversation_id,
            gen.stream_id,
            request.new_messages,
            replace=request.replace,
            edit=request.edit,
            title=request.title,
            model=request.remember_model,
            stale=request.stale_claim,
        )

    async def _relay(self, gen: Generation, stream: RoutedStream) -> Complete | Error:
        """Append the deltas to the log: the head (where the router may still retry or fall
        back) then the tail, straight from the answering provider."""
        gen.phase = "streaming"
        if gen.stop is not None:
            raise asyncio.CancelledError
        append = self.broker.append
        stream_id = gen.stream_id
        pieces = gen.pieces
        limit = self._output_limit(gen.request)
        monotonic = time.monotonic
        finish: Finish | None = None
        head = stream.head()
        try:
            for phase in ("head", "tail"):
                # the tail is taken after the head: a retry there replaces the iterator
                deltas = head if phase == "head" else stream.tail()
                async for delta in deltas:
                    if type(delta) is str:
                        if not delta:
                            continue
                        pieces.append(delta)
                        gen.last_token_at = monotonic()
                        gen.dirty = True
                        if gen.first_token_at is None:
                            self._first_token(gen, stream.model_id)
                        gen.last_id = append(stream_id, delta)
                        if len(pieces) >= limit:
                            finish = Finish("length")
                            break
                    elif isinstance(delta, Finish):
                        finish = delta
                        break
                if finish is not None:
                    break
        except RunnelError as exc:
            return self._error(gen, exc)
        finally:
            gen.model = stream.model_id
            await head.aclose()
        if finish is None:
            return self._error(gen, Interrupted("the model's stream ended unexpectedly"))
        return self._complete(gen, finish.reason, finish.usage)

    def _output_limit(self, request: StartRequest) -> int:
        limit = self.settings.max_output_tokens
        return limit if request.max_tokens is None else min(limit, request.max_tokens)

    def _first_token(self, gen: Generation, model: str) -> None:
        gen.first_token_at = gen.last_token_at
        gen.model = model  # a fallback may have answered: its provider counts the tokens
        elapsed = gen.first_token_at - gen.started_at
        self.metrics.first_token(model, elapsed)
        ttft = round(elapsed * 1000, 1)
        log.info("first token", extra={"fields": {"ttftMs": ttft, "model": model}})

    # outcomes

    def _stopped(self, gen: Generation) -> Complete | Error:
        stop = gen.stop
        if isinstance(stop, Cancelled):
            return self._complete(gen, stop.reason, None, stop.kept_through)
        if isinstance(stop, RunnelError):
            return self._error(gen, stop)
        return self._error(gen, Interrupted("the reply was interrupted"))

    def _complete(
        self,
        gen: Generation,
        reason: FinishReason,
        usage: Usage | None,
        kept_through: int | None = None,
    ) -> Complete:
        if kept_through is not None:
            del gen.pieces[max(0, kept_through - gen.status_id) :]
        first = gen.first_token_at
        first_ms = None if first is None else round((first - gen.started_at) * 1000, 1)
        return Complete(
            gen.model, reason, gen.message_id, usage, len(gen.pieces), kept_through, first_ms
        )

    def _error(self, gen: Generation, exc: RunnelError) -> Error:
        if gen.failure is None:
            gen.failure = exc
        return Error(exc.code, exc.message, exc.retryable, bool(gen.pieces), gen.message_id)

    async def _fail_before_start(self, gen: Generation, exc: RunnelError) -> None:
        """The conversation could not be claimed: nothing was stored, nothing is logged."""
        self._active.pop(gen.stream_id, None)
        self.metrics.set_active(len(self._active))
        await self.broker.discard(gen.stream_id)
        gen.phase = "done"
        _reject(gen.ready, exc)

    async def _finish(self, gen: Generation, outcome: Complete | Error) -> None:
        if gen.persisted:
            await self._store_outcome(gen, _reply_outcome("".join(gen.pieces), outcome, gen.model))
        self.broker.append(gen.stream_id, outcome)
        request = gen.request
        if (
            gen.persisted
            and self.on_reply_complete is not None
            and request.conversation_id is not None
            and isinstance(outcome, Complete)
            and outcome.finish_reason in ("stop", "length")
        ):
            self.on_reply_complete(
                request.user_id, request.conversation_id, gen.message_id, gen.model, request.title
            )
        self._active.pop(gen.stream_id, None)
        gen.phase = "done"
        self._count_tokens((gen,))
        self.metrics.set_active(len(self._active))
        if gen.failure is not None:
            _reject(gen.ready, gen.failure)
        else:
            _resolve(gen.ready)
        if gen.request.count_usage:
            await self._count_usage(gen, outcome)
        elapsed = time.monotonic() - gen.started_at
        self.metrics.stream_ended(outcome, elapsed)
        fields: dict[str, object] = {
            "outcome": outcome.finish_reason if isinstance(outcome, Complete) else "error",
            "tokens": len(gen.pieces),
            "durationMs": round(elapsed * 1000, 1),
        }
        if isinstance(outcome, Error):
            fields["code"] = outcome.code
        log.info("stream ended", extra={"fields": fields})

    async def _count_usage(self, gen: Generation, outcome: Complete | Error) -> None:
        """Add the reply's output tokens to its user's day (after the terminal event: a
        failure here only makes the daily limit generous, and is logged)."""
        tokens = len(gen.pieces)
        if isinstance(outcome, Complete):
            tokens = outcome.usage.completion_tokens if outcome.usage else outcome.completion_tokens
        if tokens <= 0:
            return
        try:
            await self.store.add_usage(gen.request.user_id, today(), tokens)
        except STORE_ERRORS as exc:
            log.warning("counting the reply's tokens failed (%s)", type(exc).__name__)

    async def _store_outcome(self, gen: Generation, outcome: ReplyOutcome) -> None:
        """Store the terminal state, retrying a failing database for ~15 s; the terminal
        event waits for it, so readers never see an outcome the store does not have."""
        for delay in (*FINISH_RETRY_DELAYS, None):
            try:
                await self.store.finish_reply(
                    gen.message_id, gen.request.conversation_id or "", gen.stream_id, outcome
                )
                return
            except STORE_ERRORS as exc:
                if delay is None:
                    log.error("storing the outcome failed; giving up", exc_info=exc)
                    return
                log.warning("storing the outcome failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)

    # loops

    async def _watchdog_loop(self) -> None:
        settings = self.settings
        tick = min(1.0, settings.first_token_timeout / 4, settings.stall_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for gen in list(self._active.values()):
                if gen.phase not in ("opening", "streaming") or gen.stop is not None:
                    continue
                if now - gen.started_at > settings.max_stream_duration:
                    self._abort(gen, Cancelled("length"))
                elif gen.first_token_at is None:
                    if now - gen.started_at > settings.first_token_timeout:
                        self._abort(
                            gen,
                            StreamTimeout(
                                f"the model sent nothing within {settings.first_token_timeout:g} s"
                            ),
                        )
                elif now - gen.last_token_at > settings.stall_timeout:
                    self._abort(
                        gen, StreamTimeout(f"the model stalled for {settings.stall_timeout:g} s")
                    )

    async def _lease_loop(self, broker: RedisBroker) -> None:
        """Keep this process's leases, act on cancel requests left in Redis, and end the
        streams of generators that died.

        A process killed mid-stream stops renewing; within ``LEASE_TTL + LEASE_INTERVAL``
        seconds one of the others appends ``INTERRUPTED`` to its log (readers stop waiting)
        and stores its reply ``interrupted`` with the last checkpoint. A process that cannot
        renew for ``LEASE_TTL - LEASE_INTERVAL`` seconds stops its own generations first, so
        a stream is never ended by another process while it still runs. Every
        ``SWEEP_EVERY`` rounds, replies left ``streaming`` in the store without a live
        lease (their lease vanished, e.g. with a Redis restart) are interrupted too."""
        last_renewal = time.monotonic()
        rounds = 0
        while True:
            try:
                active = list(self._active)
                await broker.renew(active)
                last_renewal = time.monotonic()
                for stream_id, kept_through in await broker.pending_cancels(active):
                    self.cancel(stream_id, kept_through)
                dead = await broker.expired()
                rounds += 1
                if rounds % SWEEP_EVERY == 0:
                    quiet = max(self.settings.first_token_timeout, self.settings.stall_timeout)
                    dead += await self.store.streaming_since(quiet + SWEEP_MARGIN)
                for stream_id in dict.fromkeys(dead):
                    if stream_id not in self._active and not await broker.alive(stream_id):
                        await self._interrupt_dead(broker, stream_id)
            except LEASE_ERRORS as exc:
                log.warning("lease upkeep failed (%s)", type(exc).__name__)
                if time.monotonic() - last_renewal > LEASE_TTL - LEASE_INTERVAL:
                    for gen in list(self._active.values()):
                        self._abort(gen, Interrupted("lost contact with the event log (Redis)"))
            await asyncio.sleep(LEASE_INTERVAL)

    async def _interrupt_dead(self, broker: RedisBroker, stream_id: str) -> None:
        meta = await broker.meta(stream_id)
        error = Error(
            Interrupted.code,
            "the server generating this reply stopped",
            True,
            True,
            meta.message_id if meta else None,
        )
        if await broker.interrupt(stream_id, error):
            await self.store.interrupt_stream(stream_id)
            log.warning(
                "interrupted a stream whose generator stopped",
                extra={"fields": {"streamId": stream_id}},
            )

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval)
            self._count_tokens(self._active.values())
            due = [
                gen
                for gen in self._active.values()
                if gen.dirty and gen.persisted and gen.phase == "streaming"
            ]
            if not due:
                continue
            for gen in due:
                gen.dirty = False
            try:
                await self.store.checkpoint([(g.message_id, "".join(g.pieces)) for g in due])
            except STORE_ERRORS as exc:
                log.warning("checkpoint failed (%s); retrying", type(exc).__name__)
                for gen in due:
                    gen.dirty = True

    def _count_tokens(self, gens: Iterable[Generation]) -> None:
        """Add the tokens logged since the last count to ``runnel_tokens_relayed``: every
        token after the ``status`` event took one id, so the ids tell, with no per-token
        work. One increment per provider."""
        added: dict[str, int] = {}
        for gen in gens:
            logged = gen.last_id - gen.status_id if gen.status_id else 0
            if logged > gen.tokens_counted:
                provider = provider_of(gen.model)
                added[provider] = added.get(provider, 0) + logged - gen.tokens_counted
                gen.tokens_counted = logged
        for provider, count in added.items():
            self.metrics.add_tokens(provider, count)


def _reply_outcome(content: str, outcome: Complete | Error, model: str) -> ReplyOutcome:
    if isinstance(outcome, Complete):
        usage = outcome.usage
        return ReplyOutcome(
            content,
            "cancelled" if outcome.finish_reason == "cancelled" else "complete",
            model=model,
            finish_reason=outcome.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else outcome.completion_tokens,
        )
    return ReplyOutcome(
        content,
        "interrupted" if outcome.code == Interrupted.code else "error",
        model=model,
        error_code=outcome.code,
        error_message=outcome.message,
    )


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


def _reject(future: asyncio.Future[None] | None, exc: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)


async def _close_when_opened(opening: asyncio.Future[RoutedStream]) -> None:
    try:
        stream = await opening
    except (asyncio.CancelledError, RunnelError):
        return
    except Exception:  # noqa: BLE001 - the runner reported it; only the close matters here
        return
    await _quietly_close(stream)


async def _quietly_close(stream: RoutedStream) -> None:
    try:
        await stream.aclose()
    except Exception:
        log.warning("closing the provider stream failed", exc_info=True)
