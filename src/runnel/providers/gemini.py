"""Gemini provider: Google's Gemini API through the official ``google-genai`` SDK.

``google-genai`` is an optional extra (``pip install 'runnel[gemini]'``); when it is missing,
``create`` raises a ``ValueError`` that says so (the registry reports it at start-up).

The SDK owns non-streaming calls (``generate_content``), model listing and the error classes
(``google.genai.errors.APIError`` and its ``ClientError`` / ``ServerError``), which
``map_gemini_error`` turns into Runnel's, the one boundary for this SDK. The SDK is handed
an ``httpx2`` client that this provider owns (a public ``HttpOptions`` field), so both paths
share one connection pool, the transport cannot switch under us (the SDK would prefer
aiohttp whenever it happens to be installed) and closing the provider closes every
connection. SDK retries are off (``HttpRetryOptions(attempts=1)``): the router retries.

The token path does not use the SDK. Its only public streaming call,
``aio.models.generate_content_stream``, turns every SSE event into a typed
``GenerateContentResponse`` (a JSON round trip, dict converters, pydantic validation) and
refuses to expose the raw response ("not supported in streaming methods"). Measured over
loopback against ``tests/fakes/gemini_server.py`` (client thread CPU, ~80-character chunks):
when each socket read carries many chunks, so parsing dominates, the typed stream costs
~160 µs per chunk and this module's reader ~16 µs; with one chunk per read, as a model
writes them, ~400-590 µs against ~160-210 µs (most of the latter is httpx2's per-read
stack). The typed layer alone, ~150 µs per chunk, is several times the relay's whole
per-token budget (shared/PERFORMANCE.md), and a Gemini chunk, though it often carries
several tokens, still arrives one per read at the pace the model writes.

So ``open`` sends the streaming request itself: the documented REST call
``POST {base}/{version}/models/{model}:streamGenerateContent?alt=sse`` with the API key in
``x-goog-api-key``, through the same ``httpx2`` client; a non-200 answer is still read and
raised by the SDK's own ``APIError.raise_for_async_response`` (public), so every error
before the stream goes through the SDK's classes and ``map_gemini_error``. Both paths turn
messages into Gemini ``contents`` with one function (``_split_messages``); the streaming
body around them is three documented fields (``_request_body``).

Stream semantics: text parts of ``candidates[0]`` are yielded (parts without text, such as
an empty part that only carries a ``thoughtSignature``, and thought summaries
``"thought": true`` are skipped); the latest ``usageMetadata`` becomes the usage; the
``finishReason`` maps to Runnel's (``_FINISH``). A response with ``promptFeedback.
blockReason`` and no candidates is a blocked prompt (a non-retryable ``PROVIDER_ERROR``),
an ``{"error": ...}`` event inside the 200 stream becomes the error of its code, and a
stream that ends without a ``finishReason`` was interrupted.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx2
import orjson

from runnel.errors import (
    ContextLengthExceeded,
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
from runnel.providers.transport import CONNECT_TIMEOUT, http_client, take_body
from runnel.providers.wire import BodyStream, SSEDecoder, json_object, retry_after

_MISSING_SDK: ImportError | None = None
try:
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types
except ImportError as exc:  # the optional extra is not installed
    _MISSING_SDK = exc

if TYPE_CHECKING:
    from runnel.settings import ProviderConfig, Settings

GEMINI_API = "https://generativelanguage.googleapis.com"
DEFAULT_API_VERSION = "v1beta"
OPTIONS = frozenset({"api_version"})
_API_VERSION = re.compile(r"^v[0-9]+[a-z0-9]*$")
_LIST_TIMEOUT_MS = 5000
_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def create(name: str, config: ProviderConfig, settings: Settings) -> Provider:
    """The ``gemini`` provider type (entry point ``runnel.providers:gemini``).

    Raises ``ValueError`` for a configuration that cannot work (the registry names the
    provider in front of the message)."""
    if _MISSING_SDK is not None:
        raise ValueError(
            "the gemini provider type needs the google-genai SDK: pip install 'runnel[gemini]'"
        ) from _MISSING_SDK
    unknown = sorted(set(config.options) - OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown gemini option {unknown[0]!r} (known: {', '.join(sorted(OPTIONS))})"
        )
    api_version = config.options.get("api_version", DEFAULT_API_VERSION)
    if not isinstance(api_version, str) or not _API_VERSION.match(api_version):
        raise ValueError(f"api_version must look like v1 or v1beta, not {api_version!r}")
    api_key = config.resolved_api_key()
    if not api_key and not config.base_url:
        raise ValueError(
            "a gemini provider needs an API key: set GEMINI_API_KEY, or api_key or "
            "api_key_env in its [providers] table"
        )
    return GeminiProvider(
        name,
        api_key=api_key,
        base_url=config.base_url,
        models=config.models,
        timeout=config.timeout,
        api_version=api_version,
    )


class GeminiProvider(Provider):
    kind = "gemini"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str | None = None,
        models: Sequence[str] = (),
        timeout: float = 600.0,
        api_version: str = DEFAULT_API_VERSION,
    ) -> None:
        super().__init__(name)
        # a keyless gateway (base_url set, no key) still gets a header the SDK insists on;
        # stripped as the SDK strips it, so both paths send the same key
        self._api_key = (api_key or "").strip() or "unused"
        self._base_url = (base_url or GEMINI_API).rstrip("/")
        self._api_version = api_version
        self._timeout = httpx2.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
        self._http = http_client(self._timeout)
        self._sync_http = httpx2.Client(timeout=self._timeout)  # unused; else the SDK makes one
        self._client = genai.Client(
            vertexai=False,
            api_key=self._api_key,
            http_options=genai_types.HttpOptions(
                base_url=self._base_url + "/",
                api_version=api_version,
                timeout=max(1, round(timeout * 1000)),
                retry_options=genai_types.HttpRetryOptions(attempts=1),
                httpx_client=self._sync_http,
                httpx_async_client=self._http,
            ),
        )
        self._models = ModelList(models, self._fetch_models)

    async def open(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        stream: bool = True,
    ) -> _GeminiStream | ReplayStream:
        system, contents = _split_messages(messages)
        if not stream:
            return await self._complete(model, system, contents, max_tokens)
        url = f"{self._base_url}/{self._api_version}/{_model_path(model)}:streamGenerateContent"
        try:
            request = self._http.build_request(
                "POST",
                url,
                params={"alt": "sse"},
                content=orjson.dumps(_request_body(system, contents, max_tokens)),
                headers={"content-type": "application/json", "x-goog-api-key": self._api_key},
            )
            response = await self._http.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise map_gemini_error(exc, self.name) from exc
        except (UnicodeError, ValueError) as exc:
            # the request could not even be built (e.g. a key that is not ASCII)
            raise ProviderError(f"could not send the request to {self.name}") from exc
        if response.status_code != 200:
            try:
                await genai_errors.APIError.raise_for_async_response(response)
            except genai_errors.APIError as exc:
                raise map_gemini_error(exc, self.name) from exc
            except httpx2.HTTPError as exc:
                raise map_gemini_error(exc, self.name) from exc
            finally:
                await response.aclose()
        return _GeminiStream(self.name, take_body(response, response.aclose))

    async def _complete(
        self, model: str, system: str | None, contents: list[dict[str, Any]], max_tokens: int
    ) -> ReplayStream:
        config = genai_types.GenerateContentConfig(
            system_instruction=system, max_output_tokens=max_tokens
        )
        try:
            reply = await self._client.aio.models.generate_content(
                model=model,
                contents=contents,
                config=config,
            )
        except (genai_errors.APIError, httpx2.HTTPError) as exc:
            raise map_gemini_error(exc, self.name) from exc
        except UnicodeError as exc:  # the request could not be built (a key that is not ASCII)
            raise ProviderError(f"could not send the request to {self.name}") from exc
        except ValueError as exc:  # an unparsable body, or one that fails validation
            raise ProviderError(f"{self.name} sent malformed data", provider=self.name) from exc
        if not reply.candidates:
            block = reply.prompt_feedback.block_reason if reply.prompt_feedback else None
            if block is not None:
                raise _blocked(str(block.value), self.name)
            raise ProviderError(f"{self.name} sent a reply without candidates", provider=self.name)
        candidate = reply.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        reason = candidate.finish_reason.value if candidate.finish_reason else "STOP"
        meta = reply.usage_metadata
        usage = (
            Usage(meta.prompt_token_count or 0, meta.candidates_token_count or 0)
            if meta is not None
            else None
        )
        return ReplayStream(text, Finish(_FINISH.get(str(reason), "stop"), usage))

    async def list_models(self) -> list[str]:
        return await self._models.get()

    async def _fetch_models(self) -> list[str]:
        config = genai_types.ListModelsConfig(
            page_size=1000, http_options=genai_types.HttpOptions(timeout=_LIST_TIMEOUT_MS)
        )
        names: list[str] = []
        try:
            async for entry in await self._client.aio.models.list(config=config):
                actions = entry.supported_actions
                if not entry.name or (actions is not None and "generateContent" not in actions):
                    continue
                names.append(entry.name.removeprefix("models/"))
        except (genai_errors.APIError, httpx2.HTTPError) as exc:
            raise map_gemini_error(exc, self.name) from exc
        except ValueError as exc:
            raise ProviderError(f"{self.name} sent malformed data", provider=self.name) from exc
        return names

    async def aclose(self) -> None:
        await self._http.aclose()
        self._sync_http.close()


class _GeminiStream(BodyStream):
    async def _run(self) -> AsyncIterator[Delta]:
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            read = self._body.read
            decoder = SSEDecoder(self._provider)
            while received := await read():
                for payload in decoder.feed(received):
                    chunk = self._parse(payload)
                    try:
                        candidates = chunk.get("candidates")
                        if not candidates:
                            _check_prompt_feedback(chunk, self._provider)
                        else:
                            candidate = candidates[0]
                            for part in (candidate.get("content") or {}).get("parts") or ():
                                text = part.get("text")
                                if text and not part.get("thought"):
                                    if not isinstance(text, str):
                                        raise TypeError("text is not a string")
                                    yield text
                            reason = candidate.get("finishReason")
                            if reason:
                                finish = _FINISH.get(reason, "stop")
                        meta = chunk.get("usageMetadata")
                        if meta:
                            usage = Usage(
                                int(meta.get("promptTokenCount") or 0),
                                int(meta.get("candidatesTokenCount") or 0),
                            )
                    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
                        raise ProviderError(
                            f"{self._provider} sent malformed data", provider=self._provider
                        ) from exc
        except httpx2.TimeoutException as exc:
            if finish is None:
                raise StreamTimeout(f"{self._provider} stopped sending") from exc
        except httpx2.HTTPError as exc:
            # the finish already arrived: losing the connection after it loses nothing
            if finish is None:
                raise Interrupted(f"the connection to {self._provider} was lost") from exc
        if finish is None:
            raise Interrupted(f"{self._provider} ended the stream before finishing")
        yield Finish(finish, usage)

    def _parse(self, payload: bytes) -> dict[str, Any]:
        obj = json_object(payload, self._provider)
        if "error" in obj and not obj.get("candidates"):
            raise _stream_error(obj["error"], self._provider)
        return obj


def _split_messages(
    messages: Sequence[ChatMessage],
) -> tuple[str | None, list[dict[str, Any]]]:
    """The system instruction and Gemini ``contents`` (assistant turns are role ``model``);
    empty turns are left out, since the API refuses empty text parts."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"])
    contents = [
        {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
        for m in messages
        if m["role"] != "system" and m["content"]
    ]
    return system or None, contents


def _request_body(
    system: str | None, contents: list[dict[str, Any]], max_tokens: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contents": contents,
        "generationConfig": {"maxOutputTokens": max_tokens},
    }
    if system is not None:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    return body


def _model_path(model: str) -> str:
    path = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
    return quote(path, safe="/")


def _check_prompt_feedback(chunk: dict[str, Any], provider: str) -> None:
    feedback = chunk.get("promptFeedback")
    if feedback and feedback.get("blockReason"):
        raise _blocked(str(feedback["blockReason"]), provider)


def _blocked(reason: str, provider: str) -> ProviderError:
    return ProviderError(
        f"{provider} blocked the prompt ({reason})", retryable=False, provider=provider
    )


def _stream_error(error: Any, provider: str) -> RunnelError:
    """An ``{"error": {...}}`` event inside a 200 stream, mapped like the same HTTP error."""
    if not isinstance(error, dict):
        return ProviderError(f"{provider} reported an error mid-stream", provider=provider)
    code = error.get("code")
    if not isinstance(code, int) or not 400 <= code < 600:
        code = _STATUS_CODES.get(str(error.get("status")), 500)
    exc_class = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    return map_gemini_error(exc_class(code, {"error": error}), provider)


def map_gemini_error(exc: Exception, provider: str) -> RunnelError:
    """The one place where ``google-genai``'s exceptions (and the ``httpx2`` errors that
    pass through it) become Runnel errors."""
    if isinstance(exc, genai_errors.APIError):
        return _map_api_error(exc, provider)
    if isinstance(exc, httpx2.TimeoutException):
        return StreamTimeout(f"{provider} did not answer in time", provider=provider)
    if isinstance(exc, httpx2.HTTPError):
        return ProviderError(f"could not connect to {provider}", provider=provider)
    return ProviderError(f"{provider} failed", provider=provider)


def _map_api_error(exc: genai_errors.APIError, provider: str) -> RunnelError:
    code = exc.code if isinstance(exc.code, int) else 0
    status = str(exc.status or "")
    if code == 0:
        code = _STATUS_CODES.get(status, 500)
    if code == 400 and _mentions_api_key(exc):
        return ProviderAuth(f"{provider} rejected the API key", provider=provider)
    if code in (401, 403):
        return ProviderAuth(f"{provider} rejected the API key", provider=provider)
    if code == 404:
        return ModelNotFound(f"{provider} does not serve that model", provider=provider)
    if code == 429:
        return RateLimited(
            f"{provider} rate limit reached (provider limit)",
            retry_after=_retry_after(exc),
            provider=provider,
        )
    if code == 400 and _mentions_context_length(exc):
        return ContextLengthExceeded(
            "the conversation is too long for this model", provider=provider
        )
    if code in (408, 504):
        return StreamTimeout(f"{provider} timed out (HTTP {code})", provider=provider)
    if 400 <= code < 500:
        return ProviderError(
            f"{provider} rejected the request (HTTP {code})", retryable=False, provider=provider
        )
    return ProviderError(f"{provider} failed (HTTP {code})", provider=provider)


def _error_details(exc: genai_errors.APIError) -> list[dict[str, Any]]:
    body = exc.details
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _mentions_api_key(exc: genai_errors.APIError) -> bool:
    reasons = {str(d.get("reason", "")) for d in _error_details(exc)}
    if reasons & {"API_KEY_INVALID", "API_KEY_EXPIRED"}:
        return True
    return "api key" in str(exc.message or "").lower()


def _mentions_context_length(exc: genai_errors.APIError) -> bool:
    text = str(exc.message or "").lower()
    return any(
        phrase in text
        for phrase in ("token count", "number of tokens", "context length", "context window")
    )


def _retry_after(exc: genai_errors.APIError) -> float | None:
    """Seconds from the ``Retry-After`` header, else from a ``google.rpc.RetryInfo`` detail
    (``"retryDelay": "7s"``)."""
    headers = getattr(exc.response, "headers", None)
    if headers is not None:
        seconds = retry_after(headers)
        if seconds is not None:
            return seconds
    for detail in _error_details(exc):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay", ""))
            try:
                return max(0.0, float(delay.removesuffix("s")))
            except ValueError:
                return None
    return None
