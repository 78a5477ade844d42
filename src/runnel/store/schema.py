"""Tables. Written for both SQLite and PostgreSQL: string ids, integer millisecond times."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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
    Index("ix_messages_conversation_seq", "conversation_id", "seq", unique=True),
    Index("ix_messages_status", "status"),
)
