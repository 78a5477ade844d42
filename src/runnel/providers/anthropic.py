"""Anthropic provider: the Messages API (``POST /v1/messages``) through the official SDK.

The ``anthropic`` SDK builds and sends the request and raises its error classes (mapped to
Runnel's in ``map_anthropic_error``, the one boundary for this SDK). As in
``providers/openai.py``, the token path does not use the SDK's typed event parsing, which
costs more per token than the whole relay budget (shared/PERFORMANCE.md): the raw streaming
response is read as bytes, and the ``data`` of each SSE event is parsed with orjson. Only
``text_delta`` content reaches the reply; thinking, signature and tool-input deltas are
skipped.

Two settings of the client are deliberate. The key is sent as ``x-api-key`` (the header the
Messages API documents) and ``Authorization`` is left out, because the installed SDK sends
an API key as ``Authorization: Bearer`` and an explicit credential also stops it from
looking for keys in the environment or in profile files on disk. OpenTelemetry spans are
off: with them on, the SDK wraps the response body in one more async layer per chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
import orjson

from runnel.errors import (
    Interrupted,
    ModelNotFound,
    ProviderAuth,
    ProviderError,
    RateLimited,
    RunnelError,
    StreamTimeout,
)
from runnel.events import FinishReason, Usage
from runnel.providers.base import ChatMessage, Delta, Finish, ModelList, Provider, ReplayStream
from runnel.providers.transport import http_client, sdk_timeout, take_body
from runnel.providers.wire import BodyStream, SSEDecoder, drain, rejected_request, retry_after

if TYPE_CHECKING:
    from runnel.settings import ProviderConfig, Settings

ANTHROPIC_API = "https://api.anthropic.com"
_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
# every field of Anthropic's usage that counts prompt tokens, and the completion one
_INPUT_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_USAGE_KEYS = (*_INPUT_KEYS, "output_tokens")
_OPTIONS = frozenset({"max_tokens"})
_MODELS_PAGE = 1000  # the largest page the Models API serves


def create(name: str, config: ProviderConfig, settings: Settings) -> Provider:
    """The ``anthropic`` provider type (entry point ``runnel.providers:anthropic``)."""
    return AnthropicProvider(
        name,
        api_key=config.resolved_api_key(),
        base_url=config.base_url or ANTHROPIC_API,
        models=config.models,
        timeout=config.timeout,
        options=config.options,
    )


class AnthropicProvider(Provider):
    kind = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str | None = None,
        models: Sequence[str] = (),
        timeout: float = 600.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name)
        self._max_tokens_cap = _max_tokens_option(name, options or {})
        # A Mapping[str, str] to the SDK, but an ``Omit`` value removes a header it would add.
        headers: dict[str, Any] = {"Authorization": anthropic.omit}
        if api_key:
            headers["X-Api-Key"] = api_key
        timeouts = sdk_timeout(timeout)
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key or "unused",  # never sent: Authorization is omitted above
            base_url=base_url or ANTHROPIC_API,
            max_retries=0,
            timeout=timeouts,
            http_client=http_client(timeouts),
            default_headers=headers,
            open_telemetry=False,
        )
        self._models = ModelList(models, self._fetch_models)

    async def open(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        stream: bool = True,
    ) -> _AnthropicStream | ReplayStream:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns: list[Any] = [
            {"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"
        ]
        if self._max_tokens_cap is not None:
            max_tokens = min(max_tokens, self._max_tokens_cap)
        if not stream:
            return await self._complete(model, turns, system, max_tokens)
        context = self._client.messages.with_streaming_response.create(
            model=model,
            messages=turns,
            system=system or anthropic.omit,
            max_tokens=max_tokens,
            stream=True,
        )
        try:
            response = await context.__aenter__()
        except anthropic.AnthropicError as exc:
            raise map_anthropic_error(exc, self.name) from exc
        except (httpx2.HTTPError, UnicodeError, ValueError) as exc:
            # the request could not even be built or sent (e.g. a key that is not ASCII)
            raise ProviderError(f"could not send the request to {self.name}") from exc
        return _AnthropicStream(
            self.name,
            take_body(response.http_response, lambda: context.__aexit__(None, None, None)),
        )

    async def _complete(
        self, model: str, turns: list[Any], system: str, max_tokens: int
    ) -> ReplayStream:
        try:
            message = await self._client.messages.create(
                model=model,
                messages=turns,
                system=system or anthropic.omit,
                max_tokens=max_tokens,
                stream=False,
            )
        except anthropic.AnthropicError as exc:
            raise map_anthropic_error(exc, self.name) from exc
        except (httpx2.HTTPError, UnicodeError, ValueError) as exc:
            raise ProviderError(f"could not send the request to {self.name}") from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = message.usage
        prompt = (
            usage.input_tokens
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        return ReplayStream(
            text,
            Finish(
                _STOP.get(message.stop_reason or "end_turn", "stop"),
                Usage(prompt, usage.output_tokens),
            ),
        )

    async def list_models(self) -> list[str]:
        return await self._models.get()

    async def _fetch_models(self) -> list[str]:
        try:
            return [
                model.id
                async for model in self._client.models.list(limit=_MODELS_PAGE, timeout=5.0)
            ]
        except anthropic.AnthropicError as exc:
            raise map_anthropic_error(exc, self.name) from exc
        except httpx2.HTTPError as exc:
            raise ProviderError(f"could not list the models of {self.name}") from exc

    async def aclose(self) -> None:
        await self._client.close()


def _max_tokens_option(provider: str, options: Mapping[str, Any]) -> int | None:
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(
            f"provider {provider}: unknown option {unknown[0]!r} for type anthropic "
            f"(known: {', '.join(sorted(_OPTIONS))})"
        )
    cap = options.get("max_tokens")
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
        raise ValueError(f"provider {provider}: option 'max_tokens' must be a positive integer")
    return cap


class _AnthropicStream(BodyStream):
    async def _run(self) -> AsyncIterator[Delta]:
        reason: FinishReason | None = None
        counts: dict[str, int] = {}
        try:
            read = self._body.read
            decoder = SSEDecoder(self._provider)
            while received := await read():
                for payload in decoder.feed(received):
                    try:
                        event = orjson.loads(payload)
                        kind = event["type"]
                        # the hot path first: one event per text delta
                        if kind == "content_block_delta":
                            delta = event["delta"]
                            if delta["type"] == "text_delta":
                                text = delta["text"]
                                if not isinstance(text, str):
                                    raise TypeError("text is not a string")
                                if text:
                                    yield text
                        elif kind == "message_delta":
                            stop = event["delta"].get("stop_reason")
                            if stop is not None:
                                reason = _STOP.get(stop, "stop")
                            _count(counts, event.get("usage"))
                        elif kind == "message_start":
                            _count(counts, event["message"].get("usage"))
                        elif kind == "content_block_start":
                            block = event["content_block"]
                            if block.get("type") == "text":
                                # normally empty, but text given here is part of the reply
                                text = block.get("text") or ""
                                if not isinstance(text, str):
                                    raise TypeError("text is not a string")
                                if text:
                                    yield text
                        elif kind == "message_stop":
                            await drain(read)
                            yield Finish(reason or "stop", _usage(counts))
                            return
                        elif kind == "error":
                            raise _stream_error(event.get("error"), self._provider)
                        # ping, content_block_stop and event types added later: nothing to do
                    except (KeyError, AttributeError, TypeError, ValueError) as exc:
                        raise ProviderError(f"{self._provider} sent malformed data") from exc
        except httpx2.TimeoutException as exc:
            raise StreamTimeout(f"{self._provider} stopped sending") from exc
        except httpx2.HTTPError as exc:
            raise Interrupted(f"the connection to {self._provider} was lost") from exc
        if reason is None:
            raise Interrupted(f"{self._provider} ended the stream before finishing")
        # the stop reason came (message_delta) but not message_stop: the reply is whole,
        # as when an OpenAI-compatible server sends its finish reason but no [DONE]
        yield Finish(reason, _usage(counts))


def _count(counts: dict[str, int], usage: Any) -> None:
    """Keep the latest non-null value of each usage field (``message_delta`` repeats them
    cumulatively)."""
    if not usage:
        return
    for key in _USAGE_KEYS:
        value = usage.get(key)
        if value is not None:
            counts[key] = int(value)


def _usage(counts: dict[str, int]) -> Usage | None:
    if not counts:
        return None
    return Usage(sum(counts.get(key, 0) for key in _INPUT_KEYS), counts.get("output_tokens", 0))


def _stream_error(error: Any, provider: str) -> RunnelError:
    """The error event that can arrive inside a 200 stream."""
    kind = str(error.get("type") or "") if isinstance(error, dict) else ""
    if kind == "rate_limit_error":
        return RateLimited(f"{provider} rate limit reached (provider limit)", provider=provider)
    if kind == "overloaded_error":
        return ProviderError(f"{provider} is overloaded and stopped the reply", provider=provider)
    if kind == "timeout_error":
        return StreamTimeout(f"{provider} timed out mid-reply", provider=provider)
    if kind == "api_error":
        return ProviderError(f"{provider} failed mid-reply", provider=provider)
    return ProviderError(
        f"{provider} reported an error mid-reply", retryable=False, provider=provider
    )


def map_anthropic_error(exc: anthropic.AnthropicError, provider: str) -> RunnelError:
    """The one place where the ``anthropic`` SDK's exceptions become Runnel errors."""
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status == 401:
            return ProviderAuth(f"{provider} rejected the API key", provider=provider)
        if status == 403:
            return ProviderAuth(
                f"{provider} refused access with this API key (HTTP 403)", provider=provider
            )
        if status == 429:
            if exc.error_code == "enforced_spend_limit_reached":
                return ProviderError(
                    f"{provider} reports the organization's spend limit is reached",
                    retryable=False,
                    provider=provider,
                )
            return RateLimited(
                f"{provider} rate limit reached (provider limit)",
                retry_after=retry_after(exc.response.headers),
                provider=provider,
            )
        if status == 402:
            return ProviderError(
                f"{provider} reports a billing problem with the account (HTTP 402)",
                retryable=False,
                provider=provider,
            )
        if status == 404:
            return ModelNotFound(f"{provider} does not serve that model", provider=provider)
        if status in (400, 413, 422):
            return rejected_request(
                status, f"{exc.error_code or ''} {exc.api_message or exc.message}", provider
            )
        if status in (408, 504):
            return StreamTimeout(f"{provider} timed out (HTTP {status})", provider=provider)
        if status == 529:
            return ProviderError(f"{provider} is overloaded (HTTP 529)", provider=provider)
        return ProviderError(
            f"{provider} failed (HTTP {status})",
            retryable=status >= 500 or status == 409,
            provider=provider,
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return StreamTimeout(f"{provider} did not answer in time", provider=provider)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(f"could not connect to {provider}", provider=provider)
    return ProviderError(f"{provider} failed", provider=provider)
