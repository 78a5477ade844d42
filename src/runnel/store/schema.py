"""Tables. Written for both SQLite and PostgreSQL: string ids, integer millisecond times.

A conversation's ``user_id`` is an account's id (``u_…``), the name of a
``RUNNEL_API_TOKENS`` user, or ``local``. Sessions and API keys are stored as the SHA-256
of their secret, never the secret itself; passwords as Argon2id hashes."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("title", String(300), nullable=False),
    Column("model", String(300), nullable=True),
    Column("system_prompt", Text, nullable=True),
    Column("active_stream_id", String(40), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_conversations_user_updated", "user_id", "updated_at", "id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column(
        "conversation_id",
        String(40),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False),
    Column("role", String(20), nullable=False),
    Column("content", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("model", String(300), nullable=True),
    Column("stream_id", String(40), nullable=True),
    Column("finish_reason", String(40), nullable=True),
    Column("error_code", String(40), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # follow-up questions a model suggested after the reply (JSON list); NULL: none yet
    Column("suggestions", Text, nullable=True),
    Index("ix_messages_conversation_seq", "conversation_id", "seq", unique=True),
    Index("ix_messages_status", "status"),
    Index("ix_messages_stream", "stream_id"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("username_key", String(64), nullable=False),  # lower case: unique ignoring case
    Column("role", String(10), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("approved", Boolean, nullable=False),  # False: signed up, waiting for an admin
    Column("max_streams", Integer, nullable=True),  # per-user limits; NULL: the default
    Column("messages_per_minute", Integer, nullable=True),
    Column("output_tokens_per_day", Integer, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=True),
    Index("ix_users_username_key", "username_key", unique=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_sessions_user", "user_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),  # the key's first characters, to tell keys apart
    Column("key_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
    Index("ix_api_keys_hash", "key_hash", unique=True),
    Index("ix_api_keys_user", "user_id"),
)

# output tokens per user and UTC day, for the daily limit (one upsert per reply)
usage = Table(
    "usage",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("day", Integer, primary_key=True),  # days since 1970-01-01, UTC
    Column("output_tokens", BigInteger, nullable=False),
)
