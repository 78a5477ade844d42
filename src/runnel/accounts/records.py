"""What the account layer hands out: users, keys, limits, and the principal of a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["admin", "user"]
Via = Literal["local", "session", "key", "token"]

LOCAL_USER = "local"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-user limits. ``None``: the server's default; 0: no limit."""

    max_streams: int | None = None
    messages_per_minute: int | None = None
    output_tokens_per_day: int | None = None


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    role: Role
    disabled: bool
    approved: bool
    limits: Limits
    created_at: int
    last_seen_at: int | None

    @property
    def pending(self) -> bool:
        """Signed up while sign-up needs approval, and not approved yet."""
        return not self.approved


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    prefix: str
    created_at: int
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: an account (by session or API key), a ``RUNNEL_API_TOKENS`` user,
    or the single local user of a server without accounts."""

    id: str
    username: str
    role: Role
    via: Via
    limits: Limits = field(default_factory=Limits)
    user: User | None = None  # the account, when there is one

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


LOCAL = Principal(LOCAL_USER, LOCAL_USER, "admin", "local")
