"""The ``langchain`` provider type: any LangChain chat model, served as Runnel models.

Configuration (``[providers.NAME] type = "langchain"``) names the models in
``options.models``, a table from a Runnel model name to an import path
``"package.module:attribute"``. The attribute is a ``BaseChatModel`` instance, or a callable
taking no arguments that returns one. Every path is imported, and every callable called
once, when the provider is created at start-up, so a typo or a broken factory stops the
server with a message naming the provider and the path instead of failing the first reply.
The model objects are then shared by all replies (LangChain chat models are safe to use
concurrently).

Streaming uses ``model.astream``. ``open`` pulls the first chunk itself, so that a model
failing before it sends anything fails ``open`` (and the router may retry or fall back);
the stream then yields that chunk's text and the rest. Text is ``content`` when it is a
string, otherwise the text of its ``"text"`` blocks (reasoning, tool and other blocks are
skipped). Usage is the sum of the chunks' ``usage_metadata``: LangChain's convention is
that chunk usage is incremental and adds up (it is what ``chunk + chunk`` computes, and the
integrations whose APIs report running totals convert them), so an integration that
reported running totals on every chunk would be over-counted here exactly as it is by
LangChain itself. The finish reason is the last ``finish_reason``, ``stop_reason`` or
``done_reason`` seen in ``response_metadata``.

``max_tokens`` is passed to the model only when its class has a ``max_tokens`` field
(ChatOpenAI, ChatAnthropic and most hosted integrations), as the smaller of the model's own
setting and Runnel's ``max_output_tokens``; other models ignore it and Runnel's own limit
still applies.

Exceptions raised by a wrapped model are turned into Runnel errors at one boundary
(``map_langchain_error``). ``aclose`` closes LangChain's async generator and, with it, the
integration's own generator (and its HTTP response); a model that only implements the
synchronous ``_stream`` runs in a worker thread and stops after the chunk in progress.

langchain-core is an optional extra (``pip install 'runnel[langchain]'``); this module
imports it only when a provider of this type is created.
"""

from __future__ import annotations

import enum
import importlib
import logging
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import openai

from runnel.errors import ModelNotFound, ProviderError, RunnelError, StreamTimeout
from runnel.events import FinishReason, Usage
from runnel.providers.base import ChatMessage, Delta, Finish, Provider, ReplayStream
from runnel.providers.openai import map_openai_error

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

    from runnel.settings import ProviderConfig, Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'runnel[langchain]'"
OPTIONS = frozenset({"models"})
# settings of ProviderConfig that mean nothing here: the LangChain model carries its own
UNUSED_FIELDS = ("base_url", "api_key", "api_key_env")

_FINISH: dict[str, FinishReason] = {
    # OpenAI, Ollama, Gemini (lower-cased), Anthropic, Bedrock
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_calls": "stop",
    "tool_use": "stop",
    "function_call": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "refusal": "content_filter",
    "recitation": "content_filter",
    "prohibited_content": "content_filter",
    "blocklist": "content_filter",
    "spii": "content_filter",
    "image_safety": "content_filter",
    "guardrail_intervened": "content_filter",
}
_FINISH_KEYS = ("finish_reason", "stop_reason", "done_reason")


def create(name: str, config: ProviderConfig, settings: Settings) -> Provider:
    """The ``langchain`` provider type (entry point ``runnel.providers:langchain``).

    Raises ``ValueError`` for a configuration that cannot work, naming the provider."""
    try:
        import langchain_core  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"provider {name!r} has type 'langchain', which needs langchain-core: "
            f"install it with {INSTALL_HINT}"
        ) from exc
    for field in UNUSED_FIELDS:
        if field in config.model_fields_set:
            raise ValueError(
                f"provider {name!r}: {field!r} has no meaning for a LangChain provider; "
                "configure it on the LangChain model itself"
            )
    models = load_models(name, config.options)
    for model in config.models:
        if model not in models:
            raise ValueError(
                f"provider {name!r}: models lists {model!r}, which options.models does not name"
            )
    return LangChainProvider(name, models)


def load_models(provider: str, options: Mapping[str, Any]) -> dict[str, BaseChatModel]:
    """Import every model of ``options.models``; ``ValueError`` naming the provider and path."""
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ValueError(
            f"provider {provider!r}: unknown option(s) {', '.join(map(repr, unknown))} "
            f"(a LangChain provider understands: {', '.join(sorted(OPTIONS))})"
        )
    table = options.get("models")
    if not isinstance(table, Mapping) or not table:
        raise ValueError(
            f"provider {provider!r}: options.models must be a table of model names to "
            'import paths, e.g. {fast = "mypackage.models:fast"}'
        )
    models: dict[str, BaseChatModel] = {}
    for model, path in table.items():
        if not isinstance(model, str) or not model or len(model) > 200 or model.split() != [model]:
            raise ValueError(f"provider {provider!r}: {model!r} is not a usable model name")
        if not isinstance(path, str):
            raise ValueError(
                f"provider {provider!r}: model {model!r} must name an import path "
                '"package.module:attribute"'
            )
        models[model] = _load_model(provider, model, path)
    return models


def _load_model(provider: str, model: str, path: str) -> BaseChatModel:
    from langchain_core.language_models import BaseChatModel

    where = f"provider {provider!r}, model {model!r}: {path!r}"
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{where} is not an import path of the form 'package.module:attribute'")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{where}: cannot import module {module_name!r} ({exc})") from exc
    except Exception as exc:
        raise ValueError(
            f"{where}: importing {module_name!r} failed ({type(exc).__name__}: {exc})"
        ) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise ValueError(f"{where}: {module_name!r} has no attribute {attribute!r}") from exc
    if isinstance(found, BaseChatModel):
        return found
    if not callable(found):
        raise ValueError(
            f"{where} is neither a LangChain chat model nor a function returning one "
            f"(it is a {type(found).__name__})"
        )
    try:
        made = found()
    except Exception as exc:
        raise ValueError(f"{where}: calling it failed ({type(exc).__name__}: {exc})") from exc
    if not isinstance(made, BaseChatModel):
        raise ValueError(
            f"{where} returned a {type(made).__name__}, not a LangChain chat model "
            "(langchain_core.language_models.BaseChatModel)"
        )
    return made


class LangChainProvider(Provider):
    kind = "langchain"

    def __init__(self, name: str, models: Mapping[str, BaseChatModel]) -> None:
        super().__init__(name)
        self._models = dict(models)

    def check_model(self, model: str) -> None:
        if model not in self._models:
            raise ModelNotFound(f"unknown model: {self.name}/{model}")

    async def list_models(self) -> list[str]:
        return list(self._models)

    async def open(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        stream: bool = True,
    ) -> _LangChainStream | ReplayStream:
        self.check_model(model)
        chat = self._models[model]
        prompt = to_langchain(messages)
        kwargs = call_options(chat, max_tokens)
        if not stream:
            try:
                reply = await chat.ainvoke(prompt, **kwargs)
            except Exception as exc:
                raise map_langchain_error(exc, self.name) from exc
            summary = Summary(self.name)
            text = summary.take(reply)
            return ReplayStream(text, summary.finish())
        try:
            upstream: AsyncIterator[BaseMessage] = aiter(chat.astream(prompt, **kwargs))
        except Exception as exc:
            raise map_langchain_error(exc, self.name) from exc
        try:
            first: BaseMessage | None = await anext(upstream)
        except StopAsyncIteration:
            first = None
        except Exception as exc:
            await _close_quietly(upstream)
            raise map_langchain_error(exc, self.name) from exc
        except BaseException:  # cancelled while waiting: stop the model too
            await _close_quietly(upstream)
            raise
        return _LangChainStream(self.name, upstream, first)


def to_langchain(messages: Sequence[ChatMessage]) -> list[BaseMessage]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


def call_options(chat: BaseChatModel, max_tokens: int) -> dict[str, Any]:
    """Keyword arguments for ``astream``/``ainvoke``: ``max_tokens`` when the model has it."""
    if "max_tokens" not in type(chat).model_fields:
        return {}
    own = getattr(chat, "max_tokens", None)
    if isinstance(own, int) and not isinstance(own, bool) and 0 < own < max_tokens:
        return {"max_tokens": own}
    return {"max_tokens": max_tokens}


def text_of(content: object, provider: str) -> str:
    """The text of a message's ``content``: a string, or the ``"text"`` blocks of a list."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ProviderError(f"{provider} sent malformed data", provider=provider)
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def finish_reason(metadata: Mapping[str, Any]) -> FinishReason | None:
    """The finish reason a chunk's ``response_metadata`` reports, if any."""
    for key in _FINISH_KEYS:
        value = metadata.get(key)
        if isinstance(value, enum.Enum):  # e.g. Gemini's FinishReason.MAX_TOKENS
            value = value.name
        if isinstance(value, str) and value:
            return _FINISH.get(value.lower(), "stop")
    return None


@dataclass(slots=True)
class Summary:
    """What the chunks of one reply add up to: usage and the finish reason."""

    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    has_usage: bool = False
    reason: FinishReason | None = None

    def take(self, message: BaseMessage) -> str:
        """Record ``message``'s usage and finish reason; return its text."""
        usage = getattr(message, "usage_metadata", None)
        if usage:
            self.has_usage = True
            self.input_tokens += int(usage.get("input_tokens") or 0)
            self.output_tokens += int(usage.get("output_tokens") or 0)
        metadata = message.response_metadata
        if metadata:
            reason = finish_reason(metadata)
            if reason is not None:
                self.reason = reason
        return text_of(message.content, self.provider)

    def finish(self) -> Finish:
        usage = Usage(self.input_tokens, self.output_tokens) if self.has_usage else None
        return Finish(self.reason or "stop", usage)


class _LangChainStream:
    def __init__(
        self, provider: str, upstream: AsyncIterator[BaseMessage], first: BaseMessage | None
    ) -> None:
        self._provider = provider
        self._upstream = upstream
        self._first = first
        self._closed = False

    def is_closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._run()

    async def _run(self) -> AsyncIterator[Delta]:
        if self.is_closed():
            return
        summary = Summary(self._provider)
        try:
            first, self._first = self._first, None
            if first is not None:
                text = summary.take(first)
                if text:
                    yield text
                async for message in self._upstream:
                    if self.is_closed():  # aclose() came from another task meanwhile
                        return
                    text = summary.take(message)
                    if text:
                        yield text
        except RunnelError:
            raise
        except Exception as exc:
            raise map_langchain_error(exc, self._provider) from exc
        finally:
            await _close_quietly(self._upstream)
        yield summary.finish()

    async def aclose(self) -> None:
        """Stop the model: close LangChain's generator (idempotent, safe at any time)."""
        self._closed = True
        await _close_quietly(self._upstream)


async def _close_quietly(upstream: AsyncIterator[BaseMessage]) -> None:
    close = getattr(upstream, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except RuntimeError as exc:
        # most likely being iterated by another task right now: ``_run`` closes it when it
        # resumes
        log.debug("the LangChain stream could not be closed now: %s", exc)
    except Exception:
        log.warning("closing a LangChain stream failed", exc_info=True)


def map_langchain_error(exc: Exception, provider: str) -> RunnelError:
    """The one place where exceptions raised by a wrapped LangChain model become Runnel
    errors: SDK errors as their own providers map them, the rest as retryable failures
    whose details are logged, not sent."""
    if isinstance(exc, RunnelError):
        return exc
    if isinstance(exc, openai.OpenAIError):
        return map_openai_error(exc, provider)
    anthropic = sys.modules.get("anthropic")  # an anthropic error implies the SDK is loaded
    if anthropic is not None and isinstance(exc, anthropic.AnthropicError):
        mapped = _map_anthropic(exc, provider)
        if mapped is not None:
            return mapped
    if isinstance(exc, TimeoutError):
        return StreamTimeout(f"{provider} did not answer in time", provider=provider)
    log.warning("the LangChain model of %s raised %s", provider, type(exc).__name__, exc_info=exc)
    return ProviderError(f"{provider} failed", provider=provider)


def _map_anthropic(exc: Exception, provider: str) -> RunnelError | None:
    """``runnel.providers.anthropic.map_anthropic_error``, when that provider is present."""
    try:
        module = importlib.import_module("runnel.providers.anthropic")
    except ImportError:
        return None
    mapper = getattr(module, "map_anthropic_error", None)
    if not callable(mapper):
        return None
    mapped = mapper(exc, provider)
    return mapped if isinstance(mapped, RunnelError) else None
