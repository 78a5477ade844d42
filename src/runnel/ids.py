"""Identifiers: a short prefix and 128 random bits, URL-safe."""

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(16)}"
