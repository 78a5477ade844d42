"""OpenAI-compatible provider: OpenAI, Ollama, vLLM, llama.cpp, LM Studio, hosted clones.

The official ``openai`` SDK builds and sends the request, handles auth and raises its error
classes (mapped to Runnel's in ``map_openai_error``, the one boundary for this SDK). The
token path does not use the SDK's typed chunk parsing, which costs more per token than the
whole relay budget (shared/PERFORMANCE.md): the raw streaming response is read as bytes and
its ``chat.completion.chunk`` SSE lines are parsed with orjson.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from openai.types.chat import ChatCompletion

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
from runnel.providers.wire import (
    BodyStream,
    SSEDecoder,
    drain,
    json_object,
    rejected_request,
    retry_after,
)

if TYPE_CHECKING:
    from runnel.settings import ProviderConfig, Settings

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    "function_call": "stop",
}
OPENAI_API = "https://api.openai.com/v1"


def create(name: str, config: ProviderConfig, settings: Settings) -> Provider:
    """The ``openai`` provider type (entry point ``runnel.providers:openai``)."""
    return OpenAIProvider(
        name,
        api_key=config.resolved_api_key(),
        base_url=config.base_url or OPENAI_API,
        models=config.models,
        timeout=config.timeout,
    )


class OpenAIProvider(Provider):
    kind = "openai"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str | None,
        models: Sequence[str] = (),
        timeout: float = 600.0,
    ) -> None:
        super().__init__(name)
        timeouts = sdk_timeout(timeout)
        self._client = openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=base_url,
            max_retries=0,
            timeout=timeouts,
            http_client=http_client(timeouts),
        )
        self._models = ModelList(models, self._fetch_models)

    async def open(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        stream: bool = True,
    ) -> _OpenAIStream | ReplayStream:
        wire_messages: list[Any] = list(messages)
        if not stream:
            return await self._complete(model, wire_messages)
        # The SDK's own POST (request building, auth, error classes), not its typed
        # ``chat.completions.create``: that one first walks the parameters against their
        # TypedDicts, ~120 µs per message of the conversation — 6 ms before the request is
        # sent for a 50-message chat — to change nothing in plain text messages.
        try:
            response = await self._client.post(
                "/chat/completions",
                body={
                    "model": model,
                    "messages": wire_messages,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
                cast_to=httpx2.Response,  # the SDK returns the response, its body unread
                stream=True,
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, self.name) from exc
        except (httpx2.HTTPError, UnicodeError, ValueError) as exc:
            # the request could not even be built or sent (e.g. a key that is not ASCII)
            raise ProviderError(f"could not send the request to {self.name}") from exc
        return _OpenAIStream(self.name, take_body(response, response.aclose))

    async def _complete(self, model: str, messages: list[Any]) -> ReplayStream:
        try:
            completion = await self._client.post(
                "/chat/completions",
                body={"model": model, "messages": messages, "stream": False},
                cast_to=ChatCompletion,
            )
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, self.name) from exc
        except (httpx2.HTTPError, UnicodeError, ValueError) as exc:
            raise ProviderError(f"could not send the request to {self.name}") from exc
        if not completion.choices:
            raise ProviderError(f"{self.name} sent a reply without choices", provider=self.name)
        choice = completion.choices[0]
        usage = completion.usage
        return ReplayStream(
            choice.message.content or "",
            Finish(
                # typed as always set, but OpenAI-compatible servers may send null
                _FINISH.get(str(choice.finish_reason), "stop"),
                Usage(usage.prompt_tokens, usage.completion_tokens) if usage else None,
            ),
        )

    async def list_models(self) -> list[str]:
        return await self._models.get()

    async def _fetch_models(self) -> list[str]:
        try:
            page = await self._client.models.list(timeout=5.0)
        except openai.OpenAIError as exc:
            raise map_openai_error(exc, self.name) from exc
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        await self._client.close()


class _OpenAIStream(BodyStream):
    async def _run(self) -> AsyncIterator[Delta]:
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            read = self._body.read
            decoder = SSEDecoder(self._provider)
            while received := await read():
                for payload in decoder.feed(received):
                    if payload == b"[DONE]":
                        await drain(read)
                        yield Finish(finish or "stop", usage)
                        return
                    chunk = self._parse(payload)
                    try:
                        for choice in chunk.get("choices") or ():
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                if not isinstance(content, str):
                                    raise TypeError("content is not text")
                                yield content
                            reason = choice.get("finish_reason")
                            if reason:
                                finish = _FINISH.get(reason, "stop")
                        raw_usage = chunk.get("usage")
                        if raw_usage:
                            usage = Usage(
                                int(raw_usage.get("prompt_tokens") or 0),
                                int(raw_usage.get("completion_tokens") or 0),
                            )
                    except (AttributeError, TypeError, ValueError) as exc:
                        raise ProviderError(f"{self._provider} sent malformed data") from exc
        except httpx2.TimeoutException as exc:
            raise StreamTimeout(f"{self._provider} stopped sending") from exc
        except httpx2.HTTPError as exc:
            raise Interrupted(f"the connection to {self._provider} was lost") from exc
        if finish is None:
            raise Interrupted(f"{self._provider} ended the stream before finishing")
        yield Finish(finish, usage)

    def _parse(self, payload: bytes) -> dict[str, Any]:
        obj = json_object(payload, self._provider)
        if "error" in obj and not obj.get("choices"):
            raise _stream_error(obj["error"], self._provider)
        return obj


def _stream_error(error: Any, provider: str) -> RunnelError:
    kind = str(error.get("type") or error.get("code") or "") if isinstance(error, dict) else ""
    if "rate" in kind:
        return RateLimited(f"{provider} rate limit reached (provider limit)", provider=provider)
    return ProviderError(f"{provider} reported an error mid-stream", provider=provider)


def map_openai_error(exc: openai.OpenAIError, provider: str) -> RunnelError:
    """The one place where the ``openai`` SDK's exceptions become Runnel errors."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            return ProviderAuth(f"{provider} rejected the API key", provider=provider)
        if status == 429 and getattr(exc, "code", None) == "insufficient_quota":
            return ProviderError(
                f"{provider} reports the account's quota is used up",
                retryable=False,
                provider=provider,
            )
        if status == 429:
            return RateLimited(
                f"{provider} rate limit reached (provider limit)",
                retry_after=retry_after(exc.response.headers),
                provider=provider,
            )
        if status == 404:
            return ModelNotFound(f"{provider} does not serve that model", provider=provider)
        if status in (400, 413, 422):
            code = getattr(exc, "code", None)
            return rejected_request(status, f"{code or ''} {exc.message}", provider)
        if status in (408, 504):
            return StreamTimeout(f"{provider} timed out (HTTP {status})", provider=provider)
        return ProviderError(f"{provider} failed (HTTP {status})", provider=provider)
    if isinstance(exc, openai.APITimeoutError):
        return StreamTimeout(f"{provider} did not answer in time", provider=provider)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"could not connect to {provider}", provider=provider)
    return ProviderError(f"{provider} failed", provider=provider)
