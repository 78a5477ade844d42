"""Request ids: taken from a well-formed ``X-Request-ID`` or made; set in the log context
and echoed on the response. Raw ASGI, so streaming bodies pass straight through."""

from __future__ import annotations

import re
import secrets

from runnel import logs
from runnel.api.streaming import Message, Receive, Scope, Send

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, app: object) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _VALID.match(incoming) else secrets.token_hex(8)
        logs.request_id.set(request_id)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)  # type: ignore[operator]
