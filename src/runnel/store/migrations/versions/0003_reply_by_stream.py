"""Find a reply by its stream (an OpenAI response id names a stream).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_stream", "messages", ["stream_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_stream", table_name="messages")
