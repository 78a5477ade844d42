"""Secrets handed to clients: session tokens and API keys, 256 random bits each.

Only their SHA-256 is stored. A fast hash is right here (unlike for passwords): the
secrets are random, so there is nothing to guess, and a lookup by hash is one index read.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "rk_"
SHOWN_PREFIX = 10  # characters of a key kept in clear to tell keys apart ("rk_AbCdEfG")


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_api_key(secret: str) -> bool:
    return secret.startswith(KEY_PREFIX)
