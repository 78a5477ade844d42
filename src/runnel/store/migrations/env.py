"""Alembic environment. Runnel runs migrations itself at start-up (``Store.open``) and
hands Alembic its own connection in ``config.attributes["connection"]``."""

from alembic import context

from runnel.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
