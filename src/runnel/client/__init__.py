"""``runnel.client``: a Python client of Runnel's native API (``docs/client.md``).

    from runnel.client import Client, Token

    with Client("http://127.0.0.1:8000", key="rk_…") as client:
        conversation = client.create_conversation(title="Notes")
        for event in client.send(conversation["id"], "Hello"):
            if isinstance(event, Token):
                print(event.text, end="", flush=True)

A reply whose connection drops is resumed by itself (``Last-Event-ID``, with backoff):
the caller sees every token exactly once, in order. It imports nothing of the server, so
it needs only httpx2 and orjson.
"""

from runnel.client.aio import AsyncClient, AsyncReply
from runnel.client.backoff import Backoff
from runnel.client.errors import (
    Conflict,
    ContextTooLong,
    Forbidden,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    Overloaded,
    ProviderFailed,
    RateLimited,
    RunnelClientError,
    ServerError,
    StreamInProgress,
    StreamLost,
    Unauthorized,
    Unreachable,
)
from runnel.client.events import Complete, Event, Failed, Status, Terminal, Token
from runnel.client.sync import Client, Reply

__all__ = [
    "AsyncClient",
    "AsyncReply",
    "Backoff",
    "Client",
    "Complete",
    "Conflict",
    "ContextTooLong",
    "Event",
    "Failed",
    "Forbidden",
    "InvalidRequest",
    "ModelNotFound",
    "NotFound",
    "Overloaded",
    "ProviderFailed",
    "RateLimited",
    "Reply",
    "RunnelClientError",
    "ServerError",
    "Status",
    "StreamInProgress",
    "StreamLost",
    "Terminal",
    "Token",
    "Unauthorized",
    "Unreachable",
]
