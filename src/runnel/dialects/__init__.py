"""Dialects: other clients' protocols over the same generation service and event logs.

Each dialect is pure: a request parser (its wire request → what ``ChatService`` takes), an
event encoder (``runnel.sse.Encoder``: Runnel's typed events → its frames) and an error
mapper (Runnel's error codes → its error shape). None talks to a provider, the broker or
the store; the routes in ``runnel.api`` do, through the chat service (DESIGN §9).
"""
